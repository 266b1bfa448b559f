#!/usr/bin/env python3
"""Host simulation behind the union schedule's token groups (src/kernels/sm90/attention/token_groups.cu).

A consumer warpgroup of the union-of-blocks kernel computes every block that any of its 4 queries listed, for all
of them. This script draws the benchmark's clustered selections for one group of 128 queries (each query takes 15
distinct blocks of a shared pool of 24; the local block, common to all, is left out) and prints the mean union size
per group of 4 queries for:

  consecutive   queries 4j .. 4j + 3 (the kernel without token groups)
  greedy        token_groups.cu's rule: the lowest query not yet placed, then three times the query adding the
                fewest blocks (ties: the lower query)
  greedy+swaps  greedy, then random pairwise swaps between groups kept when they shrink the two unions
  seed+3        the lowest query not placed and the 3 queries nearest to it (a one-pass alternative)

and, for the greedy groups, the union of a tile's two groups (8 queries, one K / V stream) with the groups paired
in order and greedily. Pure Python, deterministic (--seed); no GPU.

  python3 scripts/token_groups_sim.py [--trials 20] [--pool 24] [--k 15] [--seed 1]
"""
import argparse
import random


def popcount(x):
    return bin(x).count("1")


def draw(rng, pool, k, n=128):
    return [sum(1 << b for b in rng.sample(range(pool), k)) for _ in range(n)]


def union(masks, group):
    u = 0
    for q in group:
        u |= masks[q]
    return u


def mean_union(masks, groups):
    return sum(popcount(union(masks, g)) for g in groups) / len(groups)


def greedy(masks):
    left = list(range(len(masks)))
    groups = []
    while left:
        seed = left.pop(0)
        group, u = [seed], masks[seed]
        for _ in range(3):
            if not left:
                break
            best = min(left, key=lambda q: (popcount(u | masks[q]), q))
            left.remove(best)
            group.append(best)
            u |= masks[best]
        groups.append(group)
    return groups


def seed_nearest(masks):
    left = list(range(len(masks)))
    groups = []
    while left:
        seed = left.pop(0)
        near = sorted(left, key=lambda q: (popcount(masks[seed] | masks[q]), q))[:3]
        for q in near:
            left.remove(q)
        groups.append([seed] + near)
    return groups


def swaps(masks, groups, rng, iters=20000):
    groups = [list(g) for g in groups]
    for _ in range(iters):
        a, b = rng.sample(range(len(groups)), 2)
        i, j = rng.randrange(len(groups[a])), rng.randrange(len(groups[b]))
        before = popcount(union(masks, groups[a])) + popcount(union(masks, groups[b]))
        groups[a][i], groups[b][j] = groups[b][j], groups[a][i]
        if popcount(union(masks, groups[a])) + popcount(union(masks, groups[b])) > before:
            groups[a][i], groups[b][j] = groups[b][j], groups[a][i]
    return groups


def tile_unions(masks, groups, paired):
    us = [union(masks, g) for g in groups]
    if not paired:
        return sum(popcount(us[i] | us[i + 1]) for i in range(0, len(us) - 1, 2)) / (len(us) // 2)
    left = list(range(len(us)))
    total, tiles = 0, 0
    while len(left) > 1:
        a = left.pop(0)
        b = min(left, key=lambda x: (popcount(us[a] | us[x]), x))
        left.remove(b)
        total += popcount(us[a] | us[b])
        tiles += 1
    return total / tiles


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--pool", type=int, default=24)
    ap.add_argument("--k", type=int, default=15)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sums = {}
    for _ in range(args.trials):
        masks = draw(rng, args.pool, args.k)
        g = greedy(masks)
        rows = {
            "consecutive": mean_union(masks, [list(range(i, i + 4)) for i in range(0, 128, 4)]),
            "greedy": mean_union(masks, g),
            "greedy+swaps": mean_union(masks, swaps(masks, g, rng)),
            "seed+3": mean_union(masks, seed_nearest(masks)),
            "tile of two greedy groups, in order": tile_unions(masks, g, False),
            "tile of two greedy groups, paired": tile_unions(masks, g, True),
        }
        for name, v in rows.items():
            sums[name] = sums.get(name, 0.0) + v
    print(f"128 queries, each {args.k} of a pool of {args.pool} blocks, {args.trials} trials (+1 for the local block)")
    for name, v in sums.items():
        print(f"  {name:40s} {v / args.trials:6.2f}")


if __name__ == "__main__":
    main()
