"""Similarity of every ImageNet-21K pool concept to the ImageNet-1K set under both LCS rules: cogsynth's vectorized
set similarity vs pairwise NLTK (on a sample of concepts, brute force over all 1,000 seen concepts, extrapolated).

    python benchmarks/levels_similarity.py [--sample 30] [--measure lin] [--repeats 5]

NLTK reference per rule: `lcs="max_ic"` is NLTK's own `lin_similarity` (`res_similarity`, `jcn_similarity`);
`lcs="deepest"` is the same formula through NLTK's `lowest_common_hypernyms(other)[0]` (ImageNet-CoG's rule).
Prints one JSON object: graph build seconds, per rule the median set-similarity seconds, NLTK seconds per pair and
extrapolated total, the speed-up ratio (wall time of both; CPU seconds of cogsynth's too, as a busy machine stretches wall time) and the agreement of the values on the sample.
"""
import argparse, json, time
import numpy as np
from cogsynth.core import environment_info
from cogsynth.wordnet import ConceptGraph, LCS_RULES, imagenet_wnids, load_wordnet, set_similarity, synsets, to_wnid

p = argparse.ArgumentParser()
p.add_argument("--sample", type=int, default=30, help="unseen concepts scored pairwise by NLTK (default: %(default)s)")
p.add_argument("--measure", default="lin", choices=["lin", "res", "jcn"], help="similarity (default: %(default)s)")
p.add_argument("--repeats", type=int, default=5, help="timed runs of the set similarity; the median is reported (default: %(default)s)")
p.add_argument("--seed", type=int, default=0, help="seed of the sample (default: %(default)s)")
a = p.parse_args()

load_wordnet()
seen, pool = list(imagenet_wnids("1k")), list(imagenet_wnids("21k"))
seen_set = set(seen)
unseen = [w for w in pool if w not in seen_set]
t = time.perf_counter(); graph = ConceptGraph.build(pool + seen); graph.lcs_rank; build_s = time.perf_counter() - t
ic = graph.nltk_ic()
rng = np.random.default_rng(a.seed)
sample = rng.choice(len(unseen), a.sample, replace=False)
seen_syn = synsets(seen); sample_syn = synsets([unseen[i] for i in sample])
ic_of = lambda s: graph.ic[graph.index[to_wnid(s)]]

def nltk_deepest(c, s):
    x, y, l = ic_of(c), ic_of(s), ic_of(c.lowest_common_hypernyms(s)[0])
    if a.measure == "lin": return 2 * l / (x + y) if x + y > 0 else 1.0
    if a.measure == "res": return l
    d = x + y - 2 * l
    return 1e300 if d < 1e-12 else (0.0 if 0 in (x, y) else 1 / d)

nltk_fn = {"max_ic": lambda c, s: getattr(c, f"{a.measure}_similarity")(s, ic), "deepest": nltk_deepest}
rules = {}
for rule in LCS_RULES:
    runs, cpu = [], []
    for _ in range(a.repeats):
        t, c = time.perf_counter(), time.process_time()
        sim, _ = set_similarity(graph, unseen, seen, a.measure, lcs=rule)
        runs.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    ours_s = float(np.median(runs))
    t = time.perf_counter()
    brute = np.array([[nltk_fn[rule](c, s) for s in seen_syn] for c in sample_syn])
    nltk_s = time.perf_counter() - t
    per_pair = nltk_s / brute.size
    nltk_total = per_pair * len(unseen) * len(seen)
    agree = np.isclose(brute.max(1), sim[sample], rtol=1e-12, atol=1e-12)
    rules[rule] = {"cogsynth_set_similarity_s": round(ours_s, 4), "cogsynth_runs_s": [round(r, 4) for r in runs],
                   "cogsynth_cpu_s_median": round(float(np.median(cpu)), 4),
                   "nltk_us_per_pair": round(per_pair * 1e6, 2), "nltk_pairs_timed": int(brute.size),
                   "nltk_all_pairs_s_extrapolated": round(nltk_total, 1), "speedup": round(nltk_total / ours_s, 1),
                   "sample_values_equal": f"{int(agree.sum())}/{len(agree)}",
                   "max_abs_diff": float(np.abs(brute.max(1) - sim[sample]).max())}
print(json.dumps({"benchmark": "levels_similarity", "measure": a.measure, "pool_concepts": len(unseen), "seen_concepts": len(seen),
                  "graph_build_s": round(build_s, 3), "rules": rules, "environment": environment_info()}, indent=1))
