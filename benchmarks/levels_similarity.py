"""Similarity of every ImageNet-21K pool concept to the ImageNet-1K set: cogsynth's ancestor-indexed max vs NLTK's
pairwise lin_similarity (on a sample of concepts, brute force over all 1,000 seen concepts, extrapolated).

    python benchmarks/levels_similarity.py [--sample 30] [--measure lin]

Prints one JSON object: build and set-similarity seconds, NLTK seconds per pair and extrapolated total, the speed-up
ratio, and the agreement of the values on the sample.
"""
import argparse, json, time
import numpy as np
from cogsynth.core import environment_info
from cogsynth.wordnet import ConceptGraph, imagenet_wnids, load_wordnet, set_similarity, synsets

p = argparse.ArgumentParser(); p.add_argument("--sample", type=int, default=30); p.add_argument("--measure", default="lin")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()

load_wordnet()
seen, pool = list(imagenet_wnids("1k")), list(imagenet_wnids("21k"))
seen_set = set(seen)
unseen = [w for w in pool if w not in seen_set]
t = time.perf_counter(); graph = ConceptGraph.build(pool + seen); build_s = time.perf_counter() - t
ours_s = []
for _ in range(5):
    t = time.perf_counter(); sim, nearest = set_similarity(graph, unseen, seen, a.measure); ours_s.append(time.perf_counter() - t)
ours_s = float(np.median(ours_s))

ic = graph.nltk_ic()
fn = {"lin": "lin_similarity", "res": "res_similarity", "jcn": "jcn_similarity"}[a.measure]
rng = np.random.default_rng(a.seed)
sample = rng.choice(len(unseen), a.sample, replace=False)
seen_syn = synsets(seen); sample_syn = synsets([unseen[i] for i in sample])
t = time.perf_counter()
brute = np.array([[getattr(c, fn)(s, ic) for s in seen_syn] for c in sample_syn])
nltk_s = time.perf_counter() - t
per_pair = nltk_s / brute.size
nltk_total = per_pair * len(unseen) * len(seen)
agree = np.isclose(brute.max(1), sim[sample], rtol=1e-12, atol=1e-12)
print(json.dumps({
    "benchmark": "levels_similarity", "measure": a.measure, "pool_concepts": len(unseen), "seen_concepts": len(seen),
    "graph_build_s": round(build_s, 3), "cogsynth_set_similarity_s": round(ours_s, 4),
    "nltk_us_per_pair": round(per_pair * 1e6, 2), "nltk_pairs_timed": int(brute.size),
    "nltk_all_pairs_s_extrapolated": round(nltk_total, 1), "speedup": round(nltk_total / ours_s, 1),
    "sample_values_equal": f"{int(agree.sum())}/{len(agree)}", "max_abs_diff": float(np.abs(brute.max(1) - sim[sample]).max()),
    "environment": environment_info()}, indent=1))
