"""Head-health storage and the /health and /mass routes, with real parts only.

Records are written by the real `AttentionWriter.health` and by the TensorFlow path
(`summary.write_health`), read back through TensorBoard's real data providers (the Python
reader in process, and real `tensorboard` processes on both readers). The weights are hand-built
so that every answer is known: head 1 of the causal layer becomes a previous-token head at step
70, head 2 collapses onto the first token at step 100, its largest logit jumping twelvefold, and
its logit passes 100 at step 110.
"""

import json
import urllib.parse

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from tensorboard import context as tb_context
from tensorboard.compat.proto import summary_pb2

import tb_attention_plugin as tba
from tb_attention_plugin import health
from tb_attention_plugin import health_summary
from tb_attention_plugin.server import health_aggregates
from plugin_client import PREFIX, get, get_json, production_plugin, wsgi_client
import readback
import tensorboard_process

STEPS = list(range(0, 150, 10))  # 15 steps: more than TensorBoard's default of 10 tensors
EMERGE_STEP = 70  # head 1 of the causal layer becomes previous-token
COLLAPSE_STEP = 100  # head 2 collapses onto the first token
LOGIT_STEP = 110  # head 2's max logit passes 100 (5 before the collapse, then 60, 110, ...)
T = 8
CAUSAL = "dec/layer_0"
CROSS = "dec/cross"
EXAMPLES = 4


def causal_weights(step):
    """[4, 3, 8, 8] causal self-attention (0 above the diagonal)."""
    w = np.zeros((EXAMPLES, 3, T, T), np.float32)
    a = 0.9 if step >= EMERGE_STEP else 0.1
    for i in range(T):
        w[:, 0, i, : i + 1] = 1.0 / (i + 1)  # uniform over the visible keys: diffuse
        row = np.full(i + 1, (1 - a) / (i + 1))
        row[max(i - 1, 0)] += a
        w[:, 1, i, : i + 1] = row  # previous-token share a
        if step >= COLLAPSE_STEP:
            w[:, 2, i, 0] = 1.0  # everything on the first token
        else:
            w[:, 2, i, : i + 1] = 1.0 / (i + 1)
    return w


def causal_logits(step):
    logits = np.ones((EXAMPLES, 3, T, T), np.float32)
    # Head 2's largest logit: 5 until it collapses, then 5 per step more (60 at the collapse,
    # 12 times its recent median: the collapse comes with logit growth; past 100 at step 110).
    logits[:, 2, 3, 0] = 5.0 if step < COLLAPSE_STEP else 5.0 * (step - 88)
    return logits


def cross_weights(step):
    """[4, 2, 6, 8] cross-attention: head 0 mostly a monotonic alignment, head 1 uniform."""
    w = np.zeros((EXAMPLES, 2, 6, T), np.float32)
    for i in range(6):
        w[:, 0, i] = 0.15 / (T - 1)
        w[:, 0, i, round(i * (T - 1) / 5)] = 0.85  # not one-hot: no entropy-floor alarm
    w[:, 1] = 1.0 / T
    return w


def causal_mask():
    return np.broadcast_to(np.tril(np.ones((T, T), bool)), (EXAMPLES, 3, T, T))


def causal_health(step, logits=True):
    return health.head_health(causal_weights(step), logits=causal_logits(step) if logits else None,
                              causal=True)


def cross_health(step):
    return health.head_health(cross_weights(step), cross=True)


def write_with_tf(logdir):
    """Run "op_only": the summary op only (no records; zeros above the diagonal, no mask).
    Run "tf_logged": the summary op and `summary.write_health`."""
    import tensorflow as tf
    from tb_attention_plugin import summary

    for run, with_health in (("op_only", False), ("tf_logged", True)):
        writer = tf.summary.create_file_writer(str(logdir / run))
        with writer.as_default():
            for step in STEPS:
                tba.attention(CAUSAL, causal_weights(step), step=step)
                tba.attention(CROSS, cross_weights(step), step=step)
                if with_health:
                    assert summary.write_health(CAUSAL, causal_health(step), step=step)
                    assert summary.write_health(CROSS, cross_health(step), step=step)
        writer.close()


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("health")
    with tba.AttentionWriter(root / "logged") as writer:
        for step in STEPS:
            writer.attention(CAUSAL, causal_weights(step), step=step, mask=causal_mask())
            writer.attention(CROSS, cross_weights(step), step=step)
            assert writer.health(CAUSAL, causal_health(step), step=step)
            assert writer.health(CROSS, health.HeadHealth(cross=True).update(cross_weights(step)),
                                 step=step)
    with tba.AttentionWriter(root / "records_only") as writer:  # a record without its steps
        writer.health("solo", causal_health(0), step=5)
    write_with_tf(root)
    return root


@pytest.fixture(scope="module")
def client(logdir):
    return wsgi_client(production_plugin(logdir))


def complete_health(fetch, run):
    """`/health` of a run, asked again while measures are still being computed (`pending`)."""
    for _ in range(50):
        body = fetch(run)
        if body["pending"] == 0:
            return body
    raise AssertionError("/health of %r still pending after 50 requests" % run)


def health_of(client, run):
    return complete_health(lambda r: get_json(client, "/health", run=r), run)


def assert_error(response, status, *words):
    assert response.status_code == status, (response.status_code, response.get_data()[:300])
    message = json.loads(response.get_data())["error"]
    for word in words:
        assert word in message, message


# --------------------------------------------------------------------------------------------
# The record


def test_record_round_trips_and_keeps_nan_as_null():
    result = causal_health(COLLAPSE_STEP, logits=False)
    record = health_summary.to_record(result)
    assert record["version"] == 1 and record["heads"] == 3 and record["examples"] == EXAMPLES
    assert record["measures"]["max_logit"] is None and record["measures"]["induction"] is None
    assert record["measures"]["monotonicity"] is None
    assert record["role"] == list(result["roles"]) == ["diffuse", "previous-token", "first-token"]
    assert record["sinks"][2][0][0] == 0 and record["sinks"][2][0][1] == pytest.approx(1.0)
    data = health_summary.encode(record)
    assert b"NaN" not in data
    back = health_summary.from_record(health_summary.decode(data))
    for name in ("entropy", "previous_token", "diagonal", "first_token"):
        np.testing.assert_allclose(back[name], result[name], atol=5.1e-7)  # 6 decimals
    assert np.isnan(back["max_logit"]).all()
    assert back["roles"] == record["role"]


def test_similarity_groups_are_the_clusters_of_the_divergence():
    weights = causal_weights(COLLAPSE_STEP - 10)  # heads 0 and 2 uniform, head 1 previous-token
    record = health_summary.to_record(health.head_health(weights, causal=True))
    assert record["similarity_groups"] == [[0, 2], [1]]
    no_similarity = health.head_health(weights, causal=True, similarity=False)
    assert health_summary.to_record(no_similarity)["similarity_groups"] is None


@pytest.mark.parametrize(
    "data, words",
    [
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b'{"version": 1, "heads": 1, "measures": {"entropy": [Infinity]}, "role": ["none"]}',
         "finite"),
        (b'{"version": 1, "heads": 1, "measures": {"entropy": [0.5]}, "role": ["none"],'
         b' "sinks": [[[0, NaN]]]}', "sinks"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"version": 2, "heads": 1}).encode(), "version 2"),
        (json.dumps({"version": 1, "heads": 0}).encode(), "heads"),
        (json.dumps({"version": 1, "heads": 2, "measures": {"entropy": [0.5]},
                     "role": ["none", "none"]}).encode(), "entropy"),
        (json.dumps({"version": 1, "heads": 1, "measures": {"entropy": [0.5]},
                     "role": ["none"], "similarity_groups": [[3]]}).encode(), "similarity_groups"),
    ],
)
def test_bad_records_are_refused_with_a_message(data, words):
    with pytest.raises(health_summary.RecordError, match=words):
        health_summary.decode(data)


def test_writer_rejects_bad_input_before_writing(tmp_path):
    with tba.AttentionWriter(tmp_path) as writer:
        with pytest.raises(ValueError):
            writer.health("layer", {"entropy": [0.5]}, step=0)  # not a HeadHealth result
        with pytest.raises(TypeError):
            writer.health("layer", causal_health(0), step=1.5)
        with pytest.raises(ValueError):
            writer.health("", causal_health(0), step=0)


def test_records_and_scalars_read_back_through_the_data_provider(logdir):
    provider = readback.provider_for(logdir, keep_every=("attention", "scalars"))
    ctx = tb_context.RequestContext()
    tensors = provider.list_tensors(ctx, experiment_id="", plugin_name="attention")
    assert sorted(tensors["logged"]) == [CROSS + "/health", CAUSAL + "/health"]
    blobs = provider.list_blob_sequences(ctx, experiment_id="", plugin_name="attention")
    assert sorted(blobs["logged"]) == [CROSS, CAUSAL]  # health tags are not blob sequences
    data = provider.read_tensors(ctx, experiment_id="", plugin_name="attention", downsample=1000)
    for run in ("logged", "tf_logged"):
        datums = data[run][CAUSAL + "/health"]
        assert [d.step for d in datums] == STEPS
        for datum in datums:
            assert datum.numpy.shape == ()  # rank-0 string tensor
            assert health_summary.decode(datum.numpy) == health_summary.to_record(
                causal_health(datum.step))
    content = json.loads(tensors["logged"][CAUSAL + "/health"].plugin_content)
    assert content == {"version": 1, "kind": "health"}
    scalars = provider.list_scalars(ctx, experiment_id="", plugin_name="scalars")
    for run in ("logged", "tf_logged"):
        assert {"attention_health/%s/min_entropy" % CAUSAL, "attention_health/%s/max_logit" % CAUSAL,
                "attention_health/%s/min_entropy" % CROSS} <= set(scalars[run])
        assert "attention_health/%s/max_logit" % CROSS not in scalars[run]  # no logits
        values = provider.read_scalars(ctx, experiment_id="", plugin_name="scalars", downsample=1000,
                                       run_tag_filter=None)[run]
        logit = {d.step: d.value for d in values["attention_health/%s/max_logit" % CAUSAL]}
        assert logit == {step: float(causal_logits(step).max()) for step in STEPS}
        entropy = {d.step: d.value for d in values["attention_health/%s/min_entropy" % CAUSAL]}
        for step in STEPS:
            assert entropy[step] == pytest.approx(float(np.min(causal_health(step)["entropy"])),
                                                  abs=1e-6)


def test_metadata_of_a_health_tag_is_a_tensor_of_the_attention_plugin():
    from tb_attention_plugin import metadata

    md = metadata.create_health_metadata("probe of 64")
    assert md.plugin_data.plugin_name == "attention"
    assert md.data_class == summary_pb2.DATA_CLASS_TENSOR
    assert md.summary_description == "probe of 64"


# --------------------------------------------------------------------------------------------
# /runs and /health


def test_runs_lists_layers_not_health_tags(client):
    runs = {run["run"]: [tag["tag"] for tag in run["tags"]] for run in get_json(client, "/runs")["runs"]}
    for run in ("logged", "op_only", "tf_logged"):
        assert runs[run] == [CROSS, CAUSAL]
    assert "records_only" not in runs


def test_health_from_records_has_the_known_series_alarms_and_emergence(client):
    body = get_json(client, "/health", run="logged")
    assert body["layers"] == [CROSS, CAUSAL]
    assert body["heads"] == {CROSS: 2, CAUSAL: 3}
    assert body["steps"] == STEPS  # all 15 kept: the loader's default sampling applies
    assert body["sources"] == {CROSS: "logged", CAUSAL: "logged"}
    assert body["errors"] == []
    for index, step in enumerate(STEPS):
        expected = causal_health(step)
        for name, key in health_summary.MEASURES.items():
            got = np.array([np.nan if v is None else v for v in body["series"][CAUSAL][name][index]])
            np.testing.assert_allclose(got, expected[key], atol=1e-6, equal_nan=True)
        assert body["roles"][CAUSAL][index] == expected["roles"]
    roles = body["roles"][CAUSAL]
    assert roles[0] == ["diffuse", "diffuse", "diffuse"]
    assert roles[-1] == ["diffuse", "previous-token", "first-token"]
    assert body["roles"][CROSS][0] == ["monotonic", "diffuse"]
    assert 0.85 < body["series"][CROSS]["monotonicity"][0][0] < 0.95
    assert body["series"][CROSS]["previous_token"][0] == [None, None]
    alarms = {(a["tag"], a["head"], a["step"], a["kind"], a["reason"]) for a in body["alarms"]}
    # Head 1's entropy halves at EMERGE_STEP as it becomes a previous-token head: its role, not
    # an alarm. Head 2's fall to the floor comes with its logit's growth: an alarm, though it
    # becomes a first-token head (docs/health.md, "Alarms read with the head's role").
    assert health.entropy_alarms(STEPS, [causal_health(s)["entropy"][1] for s in STEPS])
    assert alarms == {
        (CAUSAL, 2, COLLAPSE_STEP, "entropy_collapse", "entropy-floor"),
        (CAUSAL, 2, LOGIT_STEP, "logit_growth", "max-logit"),
    }
    logit_alarm = [a for a in body["alarms"] if a["kind"] == "logit_growth"][0]
    assert logit_alarm["value"] == pytest.approx(110.0)
    assert "max logit passed 100 at step 110" in logit_alarm["message"]
    emergence = {(e["tag"], e["head"], e["role"], e["step"]) for e in body["emergence"]}
    assert emergence == {(CAUSAL, 1, "previous-token", EMERGE_STEP),
                         (CAUSAL, 2, "first-token", COLLAPSE_STEP)}
    assert "%s head 1 became a previous-token head at step %d" % (CAUSAL, EMERGE_STEP) in body["changes"]
    assert [body["changes"].index(c) for c in body["changes"]] == list(range(len(body["changes"])))
    steps_of_changes = [int(c.rsplit("at step ", 1)[1].split()[0]) for c in body["changes"]]
    assert steps_of_changes == sorted(steps_of_changes)
    assert body["groups"][CAUSAL][0] == [[0, 1, 2]]  # a previous-token share of 0.1: alike
    assert body["groups"][CAUSAL][STEPS.index(COLLAPSE_STEP - 10)] == [[0, 2], [1]]
    assert body["groups"][CAUSAL][-1] == [[0], [1], [2]]
    assert body["sinks"][CAUSAL][-1][2][0][0] == 0


def test_health_computed_from_summary_op_steps_matches_the_records(client):
    logged = get_json(client, "/health", run="logged")
    computed = health_of(client, "op_only")
    assert computed["sources"] == {CROSS: "computed", CAUSAL: "computed"}
    assert computed["steps"] == logged["steps"] and computed["heads"] == logged["heads"]
    assert computed["errors"] == []
    for tag in (CAUSAL, CROSS):
        for name in ("entropy", "entropy_nats", "previous_token", "diagonal", "first_token",
                     "monotonicity", "induction"):
            a = np.array(logged["series"][tag][name], dtype=float)
            b = np.array(computed["series"][tag][name], dtype=float)
            np.testing.assert_allclose(b, a, atol=0.01, equal_nan=True, err_msg=tag + " " + name)
        assert computed["roles"][tag] == logged["roles"][tag]
        assert computed["groups"][tag] == logged["groups"][tag]
    assert computed["series"][CAUSAL]["max_logit"][0] == [None, None, None]  # no stored logits
    assert computed["emergence"] == logged["emergence"]
    # Stored steps hold no logits: nothing shows the growth that came with head 2's collapse,
    # so its first-token role explains the floor there (the logged run keeps the alarm).
    assert [(a["head"], a["reason"]) for a in logged["alarms"] if a["kind"] == "entropy_collapse"] == [
        (2, "entropy-floor")]
    assert computed["alarms"] == []


def test_health_records_of_the_tf_path_equal_the_writers(client):
    tf_body = get_json(client, "/health", run="tf_logged")
    body = get_json(client, "/health", run="logged")
    for key in ("layers", "heads", "steps", "series", "roles", "alarms", "emergence", "changes",
                "groups", "sinks", "sources"):
        assert tf_body[key] == body[key], key


def test_computed_steps_are_cached_and_the_answer_revalidates(logdir):
    plugin = production_plugin(logdir)
    plugin._health.compute_seconds = 600  # every step in the first request
    client = wsgi_client(plugin)
    first = get(client, "/health", run="op_only")
    assert first.status_code == 200
    cache = plugin._health.cache
    assert cache.computed == 2 * len(STEPS)
    etag = first.headers["ETag"]
    again = get(client, "/health", headers={"If-None-Match": etag}, run="op_only")
    assert again.status_code == 304
    plugin._health._answers = type(plugin._health._answers)(max_entries=4)  # drop answers
    third = get(client, "/health", run="op_only")
    assert third.status_code == 200 and cache.computed == 2 * len(STEPS)  # steps were cached
    assert json.loads(third.get_data()) == json.loads(first.get_data())


def test_computing_in_a_time_budget_answers_partially_then_completely(logdir, client):
    plugin = production_plugin(logdir)
    budgeted = wsgi_client(plugin)
    plugin._health.compute_seconds = 0  # one step per request
    total = 2 * len(STEPS)
    first = get(budgeted, "/health", run="op_only")
    body = json.loads(first.get_data())
    assert "ETag" not in first.headers and body["pending"] == total - 1
    assert body["steps"] == [0]  # the first step of the first layer comes first
    second = json.loads(get(budgeted, "/health", run="op_only").get_data())
    assert second["pending"] == total - 2 and second["steps"] == [0]  # the other layer's first
    third = json.loads(get(budgeted, "/health", run="op_only").get_data())
    assert third["pending"] == total - 3 and third["steps"] == [0, STEPS[-1]]  # then the newest
    assert third["series"][CAUSAL]["entropy"][1] == [None, None, None]  # not computed yet
    plugin._health.compute_seconds = 60
    final = get(budgeted, "/health", run="op_only")
    assert json.loads(final.get_data())["pending"] == 0 and "ETag" in final.headers
    assert json.loads(final.get_data()) == health_of(client, "op_only")


def test_a_layer_with_records_but_no_steps_is_listed_by_health(client):
    body = get_json(client, "/health", run="records_only")
    assert body["layers"] == ["solo"] and body["steps"] == [5]
    assert body["sources"] == {"solo": "logged"}


def test_an_unreadable_record_is_reported_and_the_rest_served(tmp_path):
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2
    from tb_attention_plugin import metadata

    with tba.AttentionWriter(tmp_path / "run") as writer:
        writer.health("layer", causal_health(0), step=0)
        future = dict(health_summary.to_record(causal_health(10)), version=7)
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                        string_val=[json.dumps(future).encode()])
        writer._write_value("layer/health", 10, tensor, metadata.create_health_metadata())
    body = get_json(wsgi_client(production_plugin(tmp_path)), "/health", run="run")
    assert body["steps"] == [0]
    assert len(body["errors"]) == 1 and body["errors"][0]["step"] == 10
    assert "version 7" in body["errors"][0]["error"]


def test_a_layer_of_a_newer_format_is_reported_and_the_others_served(tmp_path):
    from tb_attention_plugin import encoding, metadata

    future = metadata.create_summary_metadata()
    future.plugin_data.content = b'{"version": 3}'
    with tba.AttentionWriter(tmp_path / "run") as writer:
        writer.attention("good", causal_weights(0), step=0)
        blobs = encoding.encode_step(causal_weights(0))
        from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2, types_pb2

        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=blobs,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(blobs))]))
        writer._write_value("future", 0, tensor, future)
    body = get_json(wsgi_client(production_plugin(tmp_path)), "/health", run="run")
    assert body["layers"] == ["future", "good"] and body["steps"] == [0]
    assert body["sources"]["future"] == "unreadable" and body["heads"]["future"] == 0
    assert body["errors"][0]["tag"] == "future" and "version 3" in body["errors"][0]["error"]
    assert body["roles"]["good"] == [["diffuse", "diffuse", "diffuse"]]


def test_induction_probe_is_recognised_from_tokens_when_computing(tmp_path):
    ids, offset = health.induction_probe(vocab_size=50, length=4, batch=2)
    tokens = [[str(t) for t in row] for row in ids]
    t = 2 * offset
    w = np.zeros((2, 1, t, t), np.float32)
    for i in range(t):
        target = i - offset + 1 if i >= offset else 0
        w[:, 0, i, target] = 1.0
    with tba.AttentionWriter(tmp_path / "run") as writer:
        writer.attention("layer", w, step=0, query_tokens=tokens, key_tokens=tokens)
    body = get_json(wsgi_client(production_plugin(tmp_path)), "/health", run="run")
    assert body["series"]["layer"]["induction"][0][0] == pytest.approx(1.0, abs=0.01)
    assert body["roles"]["layer"][0] == ["induction"]


# --------------------------------------------------------------------------------------------
# /mass


@pytest.fixture(scope="module")
def mass_client(tmp_path_factory):
    """Layers with known key profiles at steps 0 and 1 (example 1 of each differs)."""
    root = tmp_path_factory.mktemp("mass")
    with tba.AttentionWriter(root / "run") as writer:
        for step in (0, 1):
            a = np.zeros((2, 2, 4, 4), np.float32)
            a[:, 0, :, 0] = 1.0  # head 0: everything on key 0
            a[:, 1] = 0.25  # head 1: uniform
            if step == 1:
                a[:, 1] = 0.0
                a[:, 1, :, 3] = 1.0  # head 1 moves onto key 3
            a[1] = 0.25  # example 1 uniform everywhere
            writer.attention("a", a, step=step)
            b = np.full((2, 2, 4, 4), 1 / 3, np.float32)
            mask = np.ones_like(b, bool)
            mask[..., 3] = False  # key 3 masked
            mask[:, :, 3, :] = False  # query 3 padding: left out
            b[..., 3] = 0.0
            writer.attention("b", b, step=step, mask=mask)
            writer.attention("c", np.full((2, 2, 4, 6), 1 / 6, np.float32), step=step)
        writer.attention("a", np.full((1, 2, 4, 4), 0.25, np.float32), step=2)
    return wsgi_client(production_plugin(root))


def test_mass_on_selected_keys_has_the_known_answer(mass_client):
    body = get_json(mass_client, "/mass", run="run", tag="a", step=0, example=0, keys="0,1")
    assert body["layers"] == ["a", "b", "c"]
    assert body["comparable"] == [True, True, False]
    np.testing.assert_allclose(body["mass"][0], [1.0, 0.5], atol=0.003)
    np.testing.assert_allclose(body["mass"][1], [2 / 3, 2 / 3], atol=0.003)
    assert body["mass"][2] is None and "not comparable" in body["notes"][2]
    one = get_json(mass_client, "/mass", run="run", tag="a", step=1, example=0, keys="3")
    np.testing.assert_allclose(one["mass"][0], [0.0, 1.0], atol=0.003)
    np.testing.assert_allclose(one["mass"][1], [0.0, 0.0], atol=0.003)  # masked key: 0
    other = get_json(mass_client, "/mass", run="run", tag="b", step=0, example=1, keys="2")
    np.testing.assert_allclose(other["mass"][0], [0.25, 0.25], atol=0.003)


def test_mass_over_steps(mass_client):
    body = get_json(mass_client, "/mass", run="run", tag="a", step=0, example=0, keys="0",
                    over_steps=1)
    assert body["steps"] == [0, 1, 2]
    a, b, c = body["series"]
    np.testing.assert_allclose(a[0], [1.0, 0.25], atol=0.003)
    np.testing.assert_allclose(a[1], [1.0, 0.0], atol=0.003)
    np.testing.assert_allclose(a[2], [0.25, 0.25], atol=0.003)
    assert b[2] is None and c == [None, None, None]


def test_mass_over_steps_in_a_time_budget_is_pending_then_complete(tmp_path):
    with tba.AttentionWriter(tmp_path / "run") as writer:
        for step in range(5):
            for layer in ("a", "b"):
                w = np.zeros((1, 2, 3, 3), np.float32)
                w[..., step % 3] = 1.0
                writer.attention(layer, w, step=step)
    plugin = production_plugin(tmp_path)
    client = wsgi_client(plugin)
    plugin._health.compute_seconds = 0  # at most one (layer, step) read per request
    params = dict(run="run", tag="a", step=4, example=0, keys="1", over_steps=1)
    first = get_json(client, "/mass", **params)
    assert first["mass"] == [[1.0, 1.0], [1.0, 1.0]]  # the asked step is always complete
    assert first["pending"] == 10 - 2 - 1  # step 4 of both layers was read for "mass", then one
    assert first["series"][0][0] == [0.0, 0.0] and first["series"][1][0] is None
    for _ in range(20):
        body = get_json(client, "/mass", **params)
        if body["pending"] == 0:
            break
    assert body["pending"] == 0
    expected = [[1.0, 1.0] if step % 3 == 1 else [0.0, 0.0] for step in range(5)]
    assert body["series"] == [expected, expected]


def test_key_profile_leaves_out_padding_rows_and_masked_keys():
    nan = np.nan
    weights = np.array([[[0.5, 0.5, nan], [1.0, 0.0, nan], [nan, nan, nan], [0.0, 0.0, 0.0]]])
    np.testing.assert_allclose(health_aggregates.key_profile(weights), [[0.75, 0.25, 0.0]])


@pytest.mark.parametrize(
    "params, status, words",
    [
        ({"tag": "a", "step": "0", "example": "0"}, 400, ["keys"]),
        ({"tag": "a", "step": "0", "example": "0", "keys": ""}, 400, ["empty"]),
        ({"tag": "a", "step": "0", "example": "0", "keys": "1,x"}, 400, ["integers"]),
        ({"tag": "a", "step": "0", "example": "0", "keys": "-1"}, 400, ["integers"]),
        ({"tag": "a", "step": "0", "example": "0", "keys": "1,1"}, 400, ["twice"]),
        ({"tag": "a", "step": "0", "example": "0", "keys": "1", "over_steps": "2"}, 400, ["over_steps"]),
        ({"tag": "a", "step": "0", "example": "0", "keys": "4"}, 404, ["out of range"]),
        ({"tag": "a", "step": "0", "example": "2", "keys": "1"}, 404, ["out of range"]),
        ({"tag": "a", "step": "9", "example": "0", "keys": "1"}, 404, ["no step 9"]),
        ({"tag": "zzz", "step": "0", "example": "0", "keys": "1"}, 404, ["zzz"]),
    ],
)
def test_mass_bad_requests(mass_client, params, status, words):
    assert_error(get(mass_client, "/mass", run="run", **params), status, *words)


def test_health_bad_requests(client):
    assert_error(get(client, "/health"), 400, "run")
    assert_error(get(client, "/health", run="nope"), 404, "nope")
    assert_error(client.get(PREFIX + "/health?run=logged&run=op_only"), 400, "2 times")


QUERY_VALUES = st.one_of(
    st.sampled_from(["logged", "op_only", CAUSAL, CROSS, "0", "10", "140", "-1", "2", "mean",
                     "", "1,2", "0,0", "x", "9" * 25]),
    st.text(max_size=20),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(["/health", "/mass", "/export", "/filmstrip"]),
    pairs=st.lists(st.tuples(st.sampled_from(["run", "tag", "step", "example", "head", "keys",
                                              "over_steps", "steps", "scale", "cell", "format"]),
                             QUERY_VALUES), max_size=7),
)
def test_random_queries_of_the_new_routes_never_get_500(client, route, pairs):
    response = client.get(PREFIX + route, query_string=urllib.parse.urlencode(pairs))
    assert response.status_code in (200, 400, 404), (route, pairs, response.get_data()[:200])
    if response.status_code != 200:
        assert isinstance(json.loads(response.get_data())["error"], str)


# --------------------------------------------------------------------------------------------
# Both readers in a real tensorboard process


@pytest.mark.parametrize("flags", [(), ("--load_fast=false",)], ids=["rust", "python"])
def test_both_readers_list_and_serve_health(logdir, flags):
    with tensorboard_process.tensorboard(logdir, *flags) as base:
        url = base + PREFIX
        runs = tensorboard_process.get_json(url + "/runs")["runs"]
        assert {run["run"]: [t["tag"] for t in run["tags"]] for run in runs}["logged"] == [CROSS, CAUSAL]
        body = tensorboard_process.get_json(url + "/health?run=logged")
        assert body["steps"] == STEPS and body["sources"][CAUSAL] == "logged"
        assert {(e["head"], e["step"]) for e in body["emergence"] if e["tag"] == CAUSAL} == {
            (1, EMERGE_STEP), (2, COLLAPSE_STEP)}
        computed = complete_health(
            lambda run: tensorboard_process.get_json(url + "/health?run=" + run), "op_only")
        assert computed["sources"][CAUSAL] == "computed" and computed["steps"] == STEPS
        assert computed["roles"] == body["roles"]
        mass = tensorboard_process.get_json(
            url + "/mass?run=logged&tag=%s&step=140&example=0&keys=0" % urllib.parse.quote(CAUSAL))
        np.testing.assert_allclose(mass["mass"][1][2], 1.0, atol=0.003)  # head 2 on key 0
        status, headers, data = tensorboard_process.http_get(
            url + "/filmstrip?run=logged&tag=%s&example=0&head=1" % urllib.parse.quote(CAUSAL))
        assert status == 200 and headers["X-Steps"] == ",".join(map(str, STEPS))
        status, headers, data = tensorboard_process.http_get(
            url + "/export?run=logged&tag=%s&step=0&example=0&head=0" % urllib.parse.quote(CAUSAL))
        assert status == 200 and data.startswith(b"\x93NUMPY")
        status, _, data = tensorboard_process.http_get(url + "/health?run=nope")
        assert status == 404 and "nope" in json.loads(data)["error"]


@pytest.mark.skipif(not hasattr(__import__("tb_attention_plugin.encoding").encoding,
                                "encode_pooled_step"),
                    reason="pooled steps (contract A) are not in this checkout")
def test_pooled_steps_are_reported_not_measured(tmp_path):
    from tb_attention_plugin import encoding

    full = np.full((1, 2, 8, 8), 1 / 8, np.float32)
    means, maxes = encoding.pool(full, 4)
    blobs = encoding.encode_pooled_step([1, 2, 8, 8], 4, means, maxes,
                                        [("last_queries", (6, 8), (0, 8), full[:, :, 6:, :])])
    with tba.AttentionWriter(tmp_path / "run") as writer:
        writer.write_blobs("pooled", blobs, 0)
        writer.attention("full", full, step=0)
    client = wsgi_client(production_plugin(tmp_path))
    body = get_json(client, "/health", run="run")
    assert body["steps"] == [0] and body["roles"]["full"] == [["diffuse", "diffuse"]]
    assert [e["tag"] for e in body["errors"]] == ["pooled"]
    assert "overview" in body["errors"][0]["error"]
    mass = get_json(client, "/mass", run="run", tag="full", step=0, example=0, keys="0")
    assert mass["layers"] == ["full", "pooled"] and mass["mass"][1] is None
    assert "overview" in mass["notes"][1]
    # One matrix cannot be exported (the .npz of what is stored can: tests/test_export_routes.py).
    assert_error(get(client, "/export", run="run", tag="pooled", step=0, example=0, head=0,
                     format="npy"), 404, "overview")
    assert_error(get(client, "/filmstrip", run="run", tag="pooled", example=0, head=0), 404,
                 "overview")


def test_a_pooled_layer_with_logged_health_is_served_like_any_other(tmp_path):
    # The callback measures pooled layers from their query chunks (docs/health.md, "Pooled
    # layers") and writes their records as for any layer: /health serves them as logged.
    t = 96
    weights = np.zeros((2, 2, t, t), np.float32)
    weights[:, 0] = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]  # uniform causal
    weights[:, 1] = np.eye(t, k=-1)
    weights[:, 1, 0, 0] = 1.0  # previous-token
    mask = np.broadcast_to(np.tril(np.ones((t, t), bool)), weights.shape)
    with tba.AttentionWriter(tmp_path / "run") as writer:
        for step in (0, 10):
            writer.attention("long", weights, step, mask=mask, max_bytes=8 * 1024)
            writer.health("long", health.head_health(weights, causal=True), step)
    client = wsgi_client(production_plugin(tmp_path))
    step = get_json(client, "/step", run="run", tag="long", step=10)
    assert step["layout"] == "pooled"
    body = get_json(client, "/health", run="run")
    expected = health.head_health(weights, causal=True)
    assert body["layers"] == ["long"] and body["steps"] == [0, 10]
    assert body["sources"] == {"long": "logged"} and body["errors"] == []
    assert body["roles"]["long"] == [["diffuse", "previous-token"]] * 2
    np.testing.assert_allclose(body["series"]["long"]["previous_token"][1],
                               expected["previous_token"], atol=1e-6)
    np.testing.assert_allclose(body["series"]["long"]["entropy"][1], expected["entropy"],
                               atol=1e-6)
