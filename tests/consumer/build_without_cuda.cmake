# Configures and builds msa (library + tool, no tests) with CUDA disabled, as on a machine without a toolkit,
# then runs the tool's self-check.
file(REMOVE_RECURSE ${WORK_DIR})
include(${CMAKE_CURRENT_LIST_DIR}/run_helpers.cmake)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR} -G ${GENERATOR} -DMSA_ENABLE_CUDA=OFF -DMSA_BUILD_TESTS=OFF)
run(${CMAKE_COMMAND} --build ${WORK_DIR})
run(${WORK_DIR}/msa check --seed 3)
