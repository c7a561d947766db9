"""The text embedder: tokenizer and embeddings against the references, the model on S5, bad input.

References come from the model-building venv (Hugging Face tokenizers, model2vec's StaticModel.encode);
the model is the one ``build_model.sh`` builds (the same cached build setup.sh runs).
"""
from __future__ import annotations

import numpy as np
import pytest

from s5vec import embed, layout
from s5vec.errors import (
    EmptyQueryError, FormatError, IntegrityError, InvalidArgumentError, NoKnownTokensError,
)
from s5vec.s5.client import MemoryClient, PortalClient
from s5vec.s5.portal import serve
from s5vec.store import ChunkStore

from embed_kit import MODEL_VENV_PY, counting, model_dir, reference, sample_texts

TEXTS = sample_texts(1000)


@pytest.fixture(scope="module")
def mdir():
    return model_dir()


@pytest.fixture(scope="module")
def float_model(mdir):
    return embed.load_local(mdir, row_dtype=None)


@pytest.fixture(scope="module")
def model(mdir):
    return embed.load_local(mdir)


@pytest.fixture(scope="module")
def ref(tmp_path_factory, mdir):
    if not MODEL_VENV_PY.exists():
        pytest.skip("model venv absent (build_model.sh creates it)")
    return reference(TEXTS, tmp_path_factory.mktemp("ref"))


def test_tokenizer_matches_reference_wordpiece(float_model, ref):
    ids, _ = ref
    wrong = [(t, r, float_model.tok.reference_ids(t)) for t, r in zip(TEXTS, ids)
             if float_model.tok.reference_ids(t) != r]
    assert not wrong, f"{len(wrong)} of {len(TEXTS)} differ, e.g. {wrong[:3]}"


def test_embedding_matches_model2vec(float_model, ref):
    ids, vecs = ref
    compared = 0
    for text, want, ref_ids in zip(TEXTS, vecs, ids):
        try:
            got = float_model.embed_one(text)
        except (EmptyQueryError, NoKnownTokensError):
            # we refuse only texts without any known token that has a letter or digit
            assert not any(float_model.tok.is_meaningful(i) for i in ref_ids[:512] if i != 1), repr(text)
            continue
        compared += 1
        np.testing.assert_allclose(got, want, atol=2e-6, err_msg=repr(text))
    assert compared > 800


def test_batched_embed_equals_one_by_one(model):
    texts = [t for t in TEXTS[:300] if _embeddable(model, t)]
    batch = model.embed(texts)
    one = np.stack([model.embed_one(t) for t in texts])
    np.testing.assert_array_equal(batch, one)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert batch.dtype == np.float32 and batch.shape == (len(texts), 256)


def test_long_text_is_truncated_like_model2vec(float_model, tmp_path):
    long = ("space documentary about the moon landing " * 400)[:10_000]  # cut at 3,072 characters
    dense = "a, b! " * 2000                                                # cut at 512 tokens
    _, want = reference([long, dense], tmp_path)
    assert float_model.truncated(long) and float_model.truncated(dense)
    assert not float_model.truncated("a short title")
    np.testing.assert_allclose(float_model.embed_one(long), want[0], atol=2e-6)
    np.testing.assert_allclose(float_model.embed_one(dense), want[1], atol=2e-6)
    assert len(float_model.tokenize(long)) < 512 and len(float_model.tokenize(dense)) == 512


def test_quantised_rows_stay_close(model, float_model):
    texts = [t for t in TEXTS[:300] if _embeddable(model, t)]
    cos = np.sum(model.embed(texts) * float_model.embed(texts), axis=1)
    assert cos.min() > 0.99, cos.min()


@pytest.mark.parametrize("text,err", [
    ("", EmptyQueryError), ("   \t\n", EmptyQueryError), ("?!...", EmptyQueryError), ("🎬🎥", EmptyQueryError),
    ("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
     NoKnownTokensError), ("\x00\x01", EmptyQueryError),
])
def test_bad_text_is_typed(model, text, err):
    with pytest.raises(err):
        model.embed_one(text)
    assert issubclass(err, InvalidArgumentError)


def test_non_text_and_batch_errors_name_the_text(model):
    with pytest.raises(InvalidArgumentError):
        model.embed_one(42)  # type: ignore[arg-type]
    with pytest.raises(EmptyQueryError, match="text 1"):
        model.embed(["fine title", "  "])
    with pytest.raises(InvalidArgumentError):
        model.embed("a string, not a list")


def test_non_latin_scripts_embed(model):
    for text in ["Москва слезам не верит", "東京物語", "مرحبا", "ΑΘΗΝΑ"]:
        v = model.embed_one(text)
        assert abs(float(np.linalg.norm(v)) - 1) < 1e-5


def test_embed_records_adds_missing_vectors_only(model):
    recs = [{"id": "a", "text": "Star Wars (1977), Action"}, {"id": "b", "vector": [1.0, 0.0]},
            {"id": "c", "metadata": {"text": "Alien (1979), Horror"}}]
    assert embed.embed_records(recs, model) == 2
    assert recs[1]["vector"] == [1.0, 0.0]
    np.testing.assert_array_equal(recs[0]["vector"], model.embed_one("Star Wars (1977), Action"))
    bad = [{"id": "x", "text": "ok"}, {"id": "y", "text": "   "}]
    with pytest.raises(EmptyQueryError, match="record 1 .*'y'"):
        embed.embed_records(bad, model)
    assert "vector" not in bad[0]  # checked before anything changed
    with pytest.raises(InvalidArgumentError, match="record 0"):
        embed.embed_records([{"id": "z"}], model)


# ---------------------------------------------------------------- the model on S5

@pytest.fixture(scope="module")
def published(model):
    client = MemoryClient()
    store = ChunkStore(client)
    cid = embed.publish_model(model, store)
    return cid, client


def _open(cid, client):
    store = ChunkStore(client)
    return embed.open_model(cid, store), store


def test_chunked_model_round_trip_equals_local(model, published):
    cid, client = published
    cm, store = _open(cid, client)
    assert cm.dim == model.dim and cm.cid == cid
    texts = [t for t in TEXTS[:200] if _embeddable(model, t)]
    for t in texts:
        np.testing.assert_allclose(embed.embed_query(cm, store, t), model.embed_one(t), atol=1e-6, err_msg=repr(t))


def test_query_fetches_only_its_row_chunks(model, published):
    cid, client = published
    cm, store = _open(cid, client)
    text = "romantic comedy in paris"
    ids = cm.tokenize(text)
    planned = cm.plan(ids)
    assert len(planned) == len({i // embed.ROW_GROUP for i in ids})
    with counting(store) as c:
        embed.embed_query(cm, store, text)
    assert c["chunks_fetched"] == len(planned)
    assert c["bytes_fetched"] < 6 * 5000
    with counting(store) as c:  # warm: nothing more
        embed.embed_query(cm, store, text)
    assert c["chunks_fetched"] == 0 and c["bytes_fetched"] == 0


def test_republishing_uploads_nothing_new(model, published):
    cid, client = published
    before = dict(client.blobs)
    assert embed.publish_model(model, ChunkStore(client)) == cid
    assert client.blobs.keys() == before.keys()


def test_tampered_row_chunk_raises_integrity_error(model, published):
    cid, client = published
    cm, store = _open(cid, client)
    ids = cm.tokenize("space documentary")
    victim = cm.plan(ids)[0]
    good = client.blobs[victim]
    client.blobs[victim] = good[:-1] + bytes([good[-1] ^ 1])
    try:
        with pytest.raises(IntegrityError):
            embed.embed_query(cm, store, "space documentary")
    finally:
        client.blobs[victim] = good
    assert embed.embed_query(cm, store, "space documentary").shape == (256,)  # still serving


def test_malformed_model_chunks_are_format_errors(published):
    cid, client = published
    store = ChunkStore(MemoryClient(dict(client.blobs)))
    w = layout.StoreWriter(store)
    bad = w.put("text_model", {"dim": 256, "vocab_size": 10, "rows": {"group": 16, "dtype": "int8", "chunks": []},
                               "vocab": "x", "tokenizer": {}})
    with pytest.raises(FormatError):
        embed.open_model(bad, store)
    cm = embed.open_model(cid, store)
    with pytest.raises(FormatError):  # a rows chunk where the model chunk should be
        embed.open_model(cm.row_cid(0), store)


def test_model_through_a_real_portal(model, tmp_path):
    server, _ = serve(tmp_path / "portal")
    try:
        store = ChunkStore(PortalClient([server.url]))
        cid = embed.publish_model(model, store)
        cold = ChunkStore(PortalClient([server.url]))
        with counting(cold) as c:
            cm = embed.open_model(cid, cold)
        assert c["chunks_fetched"] == 2  # the model chunk and the vocabulary
        with counting(cold) as c:
            v = embed.embed_query(cm, cold, "a space documentary")
        np.testing.assert_allclose(v, model.embed_one("a space documentary"), atol=1e-6)
        assert 0 < c["chunks_fetched"] <= 3 and c["bytes_fetched"] < 100_000
    finally:
        server.stop()


def test_manifest_extra_names_the_model():
    assert embed.manifest_extra("bcid", "title", 256) == {"embed": {"model": "bcid", "field": "title", "dim": 256}}


def _embeddable(model, text) -> bool:
    try:
        model.tokenize(text)
        return True
    except InvalidArgumentError:
        return False
