"""Neuronpedia ids of the hub releases it hosts (only the trainers that have dashboards) and its feature URLs."""

from __future__ import annotations

import numpy as np
import pytest

from personamine.saes.neuronpedia import BASE_URL, feature_url, neuronpedia_id


@pytest.mark.parametrize("repo, layer, trainer, expected", [
    ("andyrdt/saes-llama-3.1-8b-instruct", 15, 1, "llama3.1-8b-it/15-resid-post-aa"),
    ("andyrdt/saes-qwen2.5-7b-instruct", 3, 1, "qwen2.5-7b-it/3-resid-post-aa"),
    ("andyrdt/saes-llama-3.1-8b-instruct", 15, 0, None),  # trainer 0 (k = 32) has no dashboards
    ("andyrdt/saes-llama-3.1-8b-instruct", 15, None, None),
    ("andyrdt/saes-llama-3.1-8b-instruct", None, 1, None),  # no layer: no page to name
    ("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", 19, None, "llama3.1-8b-it/19-resid-post-gf"),
    ("Goodfire/Llama-3.1-8B-Instruct-SAE-l19", 19, 7, "llama3.1-8b-it/19-resid-post-gf"),  # any trainer
    ("andyrdt/saes-llama-3.1-8b-Instruct", 15, 1, None),  # repo ids are exact
    ("someone/other-saes", 15, 1, None),
    (None, 15, 1, None),
    ("", 15, 1, None),
])
def test_ids_of_hosted_releases(repo, layer, trainer, expected):
    assert neuronpedia_id(repo, layer, trainer) == expected


def test_feature_urls():
    assert BASE_URL == "https://www.neuronpedia.org"
    assert feature_url("llama3.1-8b-it/15-resid-post-aa", 83801) == \
        "https://www.neuronpedia.org/llama3.1-8b-it/15-resid-post-aa/83801"
    assert feature_url("x/1-y", np.int64(7)) == "https://www.neuronpedia.org/x/1-y/7"  # a numpy id prints plainly
