"""Decoder-cosine neighbours against a brute-force numpy computation on the tiny SAE."""

from __future__ import annotations

import numpy as np
from fixtures import sae_file

from personamine.saes import load_sae
from personamine.serve.neighbours import DecoderNeighbours


def test_neighbours_equal_a_brute_force_cosine(tiny_sae_dir):
    path = str(sae_file(tiny_sae_dir))
    neighbours = DecoderNeighbours(lambda: load_sae(path), device="cpu")
    try:
        found = neighbours.of(7, n=5, wait=60)
        assert found.ready and len(found.neighbours) == 5
        sae = load_sae(path)
        d = sae.decoder_directions(np.arange(sae.d_sae)).double().numpy()
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        cosine = d @ d[7]
        cosine[7] = -np.inf
        expected = np.argsort(-cosine, kind="stable")[:5]
        assert [f for f, _ in found.neighbours] == expected.tolist()
        np.testing.assert_allclose([c for _, c in found.neighbours], cosine[expected], atol=1e-5)
        assert not neighbours.of(10**6, wait=60).ready  # a feature the SAE does not have: said, not raised
    finally:
        neighbours.close()


def test_an_sae_that_cannot_load_is_said_in_one_line():
    def broken():
        raise OSError("gone\nfor good")

    neighbours = DecoderNeighbours(broken, device="cpu")
    try:
        found = neighbours.of(0, wait=60)
        assert not found.ready and "could not be loaded" in found.note and "\n" not in found.note
    finally:
        neighbours.close()
