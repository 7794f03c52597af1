"""Bad data files give one line naming file:line, field and fix; an empty split says which of
its causes it is. Each test is named after the finding it guards."""

import warnings

import numpy as np
import pytest
from _input_helpers import jsonl, messages, one_line

from cherry_mlx.data.encode import Encoded, EncodeStats
from cherry_mlx.data.jsonl import DataError, read_jsonl
from cherry_mlx.training.data import load_splits, warn_without_gt


# -- data files -----------------------------------------------------------------------------------
def test_non_utf8_data_names_file_and_line(tmp_path):
    path = jsonl(tmp_path, messages())
    path.write_bytes(path.read_bytes() + b'{"text": "caf\xff"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl:2: not valid UTF-8 \(byte ff") as err:
        read_jsonl(path)
    one_line(err)


def test_lone_surrogate_in_data_names_file_line_and_field(tmp_path):
    path = jsonl(tmp_path, messages(), '{"text": "bad \\ud800 half"}')
    with pytest.raises(DataError, match=r"train\.jsonl:2: field text: lone surrogate '\\ud800'"):
        read_jsonl(path)


def test_deeply_nested_json_line(tmp_path):
    path = jsonl(tmp_path, '{"text": "x", "extra": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(DataError, match=r"train\.jsonl:1: .*nested too deeply"):
        read_jsonl(path)


def test_thinking_5_rejected(tmp_path):
    path = jsonl(tmp_path, messages(thinking=5))
    with pytest.raises(DataError, match=r":1: field messages\[1\]\.thinking: expected a string"):
        read_jsonl(path)


def test_top_level_gt_on_messages_example_rejected(tmp_path):
    row = {**messages(), "gt": [{"start": 0, "end": 5, "level": 1, "category": "factual"}]}
    with pytest.raises(DataError, match="field gt: top-level GT spans on a messages example"):
        read_jsonl(jsonl(tmp_path, row))


def test_tool_call_arguments_not_json_rejected(tmp_path):
    call = {"type": "function", "function": {"name": "f", "arguments": "{city: Seoul"}}
    row = messages("", tool_calls=[call])
    with pytest.raises(DataError, match=r"tool_calls\[0\]\.function\.arguments: .* not a JSON obj"):
        read_jsonl(jsonl(tmp_path, row))
    call["function"]["arguments"] = '{"city": "Seoul"}'  # a JSON string is fine (OpenAI style)
    assert read_jsonl(jsonl(tmp_path, messages("", tool_calls=[call])))


def test_train_data_file_says_pass_the_directory(tmp_path):
    path = jsonl(tmp_path, messages())
    with pytest.raises(ValueError, match="is a file; pass the directory") as err:
        load_splits(str(path), None, 64)
    assert "train.jsonl/train.jsonl" not in one_line(err)


def _split(n=4, **kw):
    stats = EncodeStats(examples=n, **kw)
    return [], stats


def test_training_data_is_empty_names_its_cause(tmp_path, monkeypatch):
    import cherry_mlx.training.data as tdata

    data = tmp_path / "d"
    data.mkdir()
    jsonl(data, messages())
    # cause 1: encoding dropped every example (truncated inside the prompt)
    monkeypatch.setattr(tdata, "load_split", lambda *a: (*_split(dropped_no_response=4), []))
    with pytest.raises(ValueError, match="all 4 examples .* dropped when encoding") as err:
        load_splits(str(data), None, 8)
    assert "training data is empty" in one_line(err)
    # cause 2: one usable example and no valid.jsonl: the hold-out would take it
    one = [Encoded(np.zeros(3, np.int32), np.ones(3, bool), np.zeros(3, np.int8),
                   np.full(3, -1, np.int8))]  # fmt: skip
    monkeypatch.setattr(tdata, "load_split", lambda *a: (one, EncodeStats(1, 1), []))
    with pytest.raises(ValueError, match="one usable example .* held out"):
        load_splits(str(data), None, 8)


def test_empty_valid_split_after_truncation_warns(tmp_path, monkeypatch):
    import cherry_mlx.training.data as tdata

    data = tmp_path / "d"
    data.mkdir()
    jsonl(data, messages())
    jsonl(data, messages(), name="valid.jsonl")
    one = [Encoded(np.zeros(3, np.int32), np.ones(3, bool), np.zeros(3, np.int8),
                   np.full(3, -1, np.int8))]  # fmt: skip
    monkeypatch.setattr(
        tdata,
        "load_split",
        lambda path, *a: (
            (one, EncodeStats(1, 1), [])
            if path.name == "train.jsonl"
            else (*_split(1, dropped_no_response=1), [])
        ),
    )
    with pytest.warns(UserWarning, match="valid split is empty.*no evaluation.*no best/"):
        load_splits(str(data), None, 8)


def test_select_gt_on_data_without_gt_spans_warns():
    plain = Encoded(np.zeros(4, np.int32), np.ones(4, bool), np.zeros(4, np.int8),
                    np.full(4, -1, np.int8))  # fmt: skip
    with pytest.warns(UserWarning, match="--select gt: the training data has no GT spans"):
        warn_without_gt("gt", [plain])
    tagged = Encoded(plain.tokens, plain.response, np.array([0, 1, 0, 0], np.int8), plain.category)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_without_gt("gt", [plain, tagged])  # some GT: no warning
        warn_without_gt("all", [plain])  # the plain loss was asked for
