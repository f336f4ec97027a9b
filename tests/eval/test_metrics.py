import math

import numpy as np
import pytest

from hierloc.eval.metrics import (all_metrics, distance_metrics, geoscore, key_is_known, level_accuracy,
                                  markdown_table)


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
