"""The generalization index as seed 000's code computes it (issue 23), its former settings as an option, and seen and
unseen classes met by name, never by index (issue 24)."""
import numpy as np
import pytest

from cogsynth.analysis import (GENINDEX_SETTINGS, cluster_nmi, generalization_index, genindex_settings, knn_agreement,
                               neighbour_count)
from cogsynth.core import CogsynthError
from cogsynth.probe import Features


def blobs(per_class=(100, 100, 100), dim=8, spread=10.0, noise=0.01, seed=0):
    "Well separated classes: a perfect layer."
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(per_class)), per_class)
    return (np.eye(len(per_class), dim)[y] * spread + rng.normal(scale=noise, size=(len(y), dim))).astype(np.float32), y


def toy_layers(y, strengths, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(y.max() + 1, 12))
    return {f"l{i}": (s * c[y] + rng.normal(size=(len(y), 12))).astype(np.float32) for i, s in enumerate(strengths)}


# ---------------------------------------------------------------- kNN: k = images per class, the image itself excluded
def test_perfect_layer_scores_k_minus_one_over_k():
    X, y = blobs()                                         # 100 images per class
    r = knn_agreement(X, y)
    assert r["k"] == 100 and r["agreement"] == pytest.approx(0.99) and r["nn1"] == 1.0
    assert knn_agreement(X, y, k="smallest")["agreement"] == 1.0      # the former default: k = 99


def test_knn_k_on_unequal_classes_by_hand():
    X, y = blobs((4, 4, 2), dim=3)
    assert neighbour_count(y) == 4 and neighbour_count(y, "smallest") == 1
    # k = 4: 8 images see 3 of their class among 4, the 2 of the small class see 1: (8 * 3/4 + 2 * 1/4) / 10
    assert knn_agreement(X, y)["agreement"] == pytest.approx((8 * 0.75 + 2 * 0.25) / 10)


def test_knn_matches_seed000s_neighbour_graph():
    from sklearn.neighbors import NearestNeighbors
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(5), 30)
    X = (np.eye(5, 16)[y] + rng.normal(scale=0.8, size=(150, 16))).astype(np.float32)
    g = NearestNeighbors(n_neighbors=30).fit(X).kneighbors_graph()          # without a query: each point left out
    nbrs = np.array([g.indices[g.indptr[i]:g.indptr[i + 1]] for i in range(len(X))])
    assert knn_agreement(X, y)["agreement"] == pytest.approx(np.mean((y[:, None] == y[nbrs]).sum(1) / 30), abs=1e-6)


# ---------------------------------------------------------------- k-means: once, as the reference runs it
def test_reference_kmeans_is_one_run_of_seed_42():
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 40)
    X = (np.eye(4, 16)[y] + rng.normal(scale=0.7, size=(160, 16))).astype(np.float32)
    ref = normalized_mutual_info_score(y, KMeans(n_clusters=4, random_state=42, n_init="auto").fit(X).labels_)
    assert cluster_nmi(X, y)["values"] == [pytest.approx(ref)]
    gi = generalization_index({"a": X}, y)
    assert gi["curve"][0]["nmi"] == pytest.approx(ref) and (gi["settings"], gi["seeds"], gi["n_init"], gi["knn_k"]) == ("reference", [42], 1, "per_class")


def test_averaged_is_the_former_behaviour():
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score
    y = np.repeat(np.arange(5), 30)
    layers = toy_layers(y, [0.3, 1.0])
    gi = generalization_index(layers, y, settings="averaged")
    assert GENINDEX_SETTINGS["averaged"] == {"seeds": (0, 1, 2), "n_init": 5, "knn_k": "smallest"}
    for row, X in zip(gi["curve"], layers.values()):
        former = np.mean([normalized_mutual_info_score(y, KMeans(5, n_init=5, random_state=s).fit_predict(X)) for s in (0, 1, 2)])
        assert row["nmi"] == pytest.approx(former) and row["k"] == 29
    assert generalization_index(layers, y, settings="averaged", seeds=(7,), knn_k=3)["curve"][0]["k"] == 3    # overrides
    with pytest.raises(CogsynthError, match="settings='old' is not one of: reference, averaged"): genindex_settings("old")


# ---------------------------------------------------------------- seen and unseen labels meet by class name
def test_seen_and_unseen_are_compared_by_name_not_index():
    y = np.repeat(np.arange(5), 20)
    lay = toy_layers(y, [1.0, 3.0])
    # the unseen digits 5-9 and the seen digits 0-4 are both labelled 0-4: no overlap by name
    r = generalization_index(lay, y, classes=list("56789"), seen=lay, y_seen=y, seen_classes=list("01234"), knn=False)
    assert "g_seen" in r
    with pytest.raises(CogsynthError, match=r"class\(es\) \['4'\] are in both the unseen and the seen set"):
        generalization_index(lay, y, classes=list("45678"), seen=lay, y_seen=y, seen_classes=list("01234"))
    with pytest.raises(CogsynthError, match=r"\['4'\] are in both"):                        # Features carry their names
        generalization_index({"l0": Features(lay["l0"], y, list("45678"))}, seen={"l0": Features(lay["l0"], y, list("01234"))})


def test_features_with_other_class_orders_score_alike():
    y = np.repeat(np.arange(4), 25)
    X = toy_layers(y, [1.5])["l0"]
    perm = np.array([2, 0, 3, 1])
    a = Features(X, y, ["cat", "dog", "fox", "owl"])
    b = Features(X, perm[y], [["cat", "dog", "fox", "owl"][list(perm).index(i)] for i in range(4)])   # same names, recoded
    ra, rb = generalization_index({"x": a}), generalization_index({"x": b})
    assert ra["curve"] == rb["curve"]
    with pytest.raises(CogsynthError, match="the unseen layers hold different classes"):
        generalization_index({"x": a, "y": Features(X, y, ["cat", "dog", "fox", "emu"])})
