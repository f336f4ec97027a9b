import math

import numpy as np
import pytest

from hierloc.eval.metrics import (all_metrics, distance_metrics, geoscore, key_is_known, level_accuracy,
                                  markdown_table, paired_difference)


def test_geoscore_golden():
    assert geoscore([0.0]) == 5000.0
    assert geoscore([1492.7]) == pytest.approx(5000 / math.e)
    assert geoscore([0.0, 1492.7]) == pytest.approx((5000 + 5000 / math.e) / 2)


def test_distance_metrics_golden():
    # Paris->London 343.56 km, Paris->Paris 0, Paris->antipode ~20015 km
    pred_lat, pred_lon = np.array([51.5074, 48.8566, -48.8566]), np.array([-0.1278, 2.3522, -177.6478])
    m = distance_metrics(pred_lat, pred_lon, np.full(3, 48.8566), np.full(3, 2.3522))
    assert m["median_km"] == pytest.approx(343.56, abs=0.01)
    assert m["mean_km"] == pytest.approx((343.56 + 0 + 20015.09) / 3, abs=0.02)
    assert m["acc_km"] == {"1": pytest.approx(1 / 3), "25": pytest.approx(1 / 3), "200": pytest.approx(1 / 3),
                           "750": pytest.approx(2 / 3), "2500": pytest.approx(2 / 3)}
    assert m["geoscore"] == pytest.approx(np.mean(5000 * np.exp(-np.array([343.56, 0, 20015.09]) / 1492.7)), rel=1e-5)


def test_unknown_levels_leave_the_denominator():
    assert key_is_known("Paris_Paris_Ile-de-France_FR")
    assert not key_is_known("NaN_Matam_SN") and not key_is_known("") and not key_is_known(float("nan"))
    true = {"country": ["SN", "SN", "FR"], "sub-region": ["NaN_Matam_SN", "X_Matam_SN", "Paris_Ile-de-France_FR"]}
    pred = {"country": ["SN", "FR", "FR"], "sub-region": ["NaN_Matam_SN", "X_Matam_SN", "Y_Ile-de-France_FR"]}
    acc, counts = level_accuracy(pred, true)
    assert acc["country"] == pytest.approx(2 / 3) and counts["country"] == 3
    assert acc["sub-region"] == pytest.approx(1 / 2) and counts["sub-region"] == 2


def test_both_protocols_reported():
    m = all_metrics(np.array([0.0]), np.array([0.0]), np.array([0.0]), np.array([0.0]),
                    pred_keys={"country": ["FR"]}, true_keys={"country": ["FR"]}, rg_keys={"country": ["DE"]})
    assert m["accuracy"]["country"] == 1.0 and m["accuracy_reverse_geocoded"]["country"] == 0.0
    table = markdown_table({"ours": m})
    assert "| ours | 100.0 |" in table and "HierLoc paper, DINOv3 (published)" in table


def test_paired_difference_by_hand():
    # 10 photos: A right on 8, B on 6; A alone right on 3, B alone on 1
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    b = np.array([1, 1, 1, 1, 1, 0, 0, 0, 1, 0], bool)
    g = paired_difference(a, b)
    # d = (3 - 1) / 10; var = ((3 + 1) / 10 - d^2) / 10 = 0.036; half = 1.96 * sqrt(0.036)
    assert (g["only_a"], g["only_b"], g["photos"]) == (3, 1, 10)
    assert g["diff"] == pytest.approx(20.0)
    assert g["high"] - g["diff"] == pytest.approx(100 * 1.96 * math.sqrt(0.036), abs=0.01)
    assert g["diff"] - g["low"] == pytest.approx(g["high"] - g["diff"], abs=0.02)
    back = paired_difference(b, a)
    assert back["diff"] == -g["diff"] and back["low"] == pytest.approx(-g["high"])
    # the same answers: no gap and no width, however many photos are right
    same = paired_difference(a, a)
    assert same["diff"] == same["low"] == same["high"] == 0.0
    with pytest.raises(ValueError, match="same photos"):
        paired_difference(a, b[:5])
