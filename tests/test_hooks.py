"""core.hooks: recording and editing activations by dotted layer name, with hooks that always come off."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core.hooks import StopForward, Trace, TraceDict, ablate, get_module


class Counter(nn.Module):
    """Identity that counts its calls, to see whether a forward reached it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


class Gate(nn.Module):
    """A custom module with a keyword argument, calling a shared submodule twice."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x, *, scale=1.0):
        return self.proj(torch.tanh(self.proj(x))) * scale


def make_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                             nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True)))
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5), Counter())


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_get_module_by_dotted_path_and_root():
    model = make_cnn()
    assert get_module(model, "0.2.0") is model[0][2][0]
    assert get_module(model, "") is model


def test_unknown_layer_names_close_matches():
    model = make_cnn()
    with pytest.raises(ValueError, match=r"'0\.2\.5' not found.*close names: .*0\.2\.0"):
        get_module(model, "0.2.5")
    with pytest.raises(ValueError, match="'encoder' not found"):
        Trace(model, "encoder")
    with pytest.raises(TypeError, match="layer name must be a str"):
        get_module(model, 3)


def test_trace_dict_records_nested_conv_layers():
    model = make_cnn()
    x = torch.randn(2, 3, 8, 8)
    with TraceDict(model, ["0.0", "0.2.0", "3"], retain_input=True, clone=True) as td:  # 0.2.1 is in place
        y = model(x)
    first = model[0][0](x)
    second = model[0][2][0](torch.relu(first))
    assert torch.allclose(td["0.0"].output, first)
    assert torch.allclose(td["0.2.0"].output, second)
    assert torch.allclose(td["0.2.0"].input, torch.relu(first))
    assert torch.allclose(td["3"].output, y)
    assert td["0.2.0"].output.shape == (2, 8, 8, 8)
    assert hook_count(model) == 0


def test_lstm_and_gru_tuple_outputs_are_recorded_whole():
    torch.manual_seed(0)
    x = torch.randn(3, 7, 4)
    lstm = nn.Sequential(nn.LSTM(4, 6, batch_first=True))
    with Trace(lstm, "0") as tr:
        out, (h, c) = lstm(x)
    rec_out, (rec_h, rec_c) = tr.output
    assert torch.equal(rec_out, out) and torch.equal(rec_h, h) and torch.equal(rec_c, c)
    assert rec_h.shape == (1, 3, 6)

    gru = nn.GRU(4, 5, num_layers=2)
    with Trace(gru, "") as tr:
        out, h = gru(x)
    assert isinstance(tr.output, tuple) and len(tr.output) == 2
    assert torch.equal(tr.output[0], out) and torch.equal(tr.output[1], h)


def test_custom_module_inputs_with_keywords_and_repeated_calls():
    torch.manual_seed(0)
    model = nn.Sequential(Gate())
    x = torch.randn(2, 4)
    with TraceDict(model, ["0", "0.proj"], retain_input=True) as td:
        model[0](x, scale=2.0)
    assert torch.equal(td["0"].input, x)
    assert td["0"].input_kwargs == {"scale": 2.0}
    proj = td["0.proj"]
    assert proj.calls == 2
    inner = model[0].proj(x)
    assert torch.allclose(proj.input, torch.tanh(inner))            # the last call's input
    assert torch.allclose(proj.output, model[0].proj(torch.tanh(inner)))


def test_hooks_removed_when_body_raises():
    model = make_cnn()
    with pytest.raises(RuntimeError, match="boom"):
        with TraceDict(model, ["0.0", "3"], edit_input=lambda a, k, n: (a, k), stop=True):
            assert hook_count(model) > 0
            raise RuntimeError("boom")
    assert hook_count(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with Trace(model, "0.0", retain_input=True):
            raise RuntimeError("boom")
    assert hook_count(model) == 0


def test_trace_dict_with_a_bad_name_leaves_no_hooks_behind():
    model = make_cnn()
    with pytest.raises(ValueError, match="'nope' not found"):
        TraceDict(model, ["0.0", "nope"], stop=True)
    assert hook_count(model) == 0
    with pytest.raises(TypeError, match="iterable of layer names"):
        TraceDict(model, "0.0")
    with pytest.raises(ValueError, match="layers is empty"):
        TraceDict(model, [])


def test_edit_output_changes_the_final_output():
    model = make_cnn()
    x = torch.randn(2, 3, 8, 8)
    baseline = model(x)
    with Trace(model, "0.2.1", edit_output=lambda out, layer: torch.zeros_like(out)) as tr:
        edited = model(x)
    assert torch.allclose(edited, model[3](torch.zeros(2, 8)))
    assert not torch.allclose(edited, baseline)
    assert torch.count_nonzero(tr.output) == 0                      # the record holds the edited output
    assert torch.equal(model(x), baseline)                          # and nothing lingers after the block


def test_ablate_conv_channels_matches_manual_zeroing():
    model = make_cnn()
    x = torch.randn(2, 3, 8, 8)
    with TraceDict(model, ["0.2.1", "3"]) as td:
        model(x)
    fmap = td["0.2.1"].output.clone()
    fmap[:, [1, 5]] = 0.0
    expected = model[3](fmap.mean((2, 3)))
    with Trace(model, "0.2.1", edit_output=ablate([1, 5])) as tr:
        y = model(x)
    assert torch.allclose(y, expected, atol=1e-6)
    assert torch.count_nonzero(tr.output[:, [1, 5]]) == 0
    assert torch.equal(tr.output[:, 0], td["0.2.1"].output[:, 0])


def test_ablate_sequences_tuples_and_per_unit_values():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)
    out, (h, c) = lstm(x)
    with Trace(lstm, "", edit_output=ablate([0, 2], value=[1.5, -2.0], dim=-1)):
        new_out, (new_h, new_c) = lstm(x)
    assert torch.all(new_out[..., 0] == 1.5) and torch.all(new_out[..., 2] == -2.0)
    assert torch.equal(new_out[..., 1], out[..., 1])
    assert torch.equal(new_h, h) and torch.equal(new_c, c)          # final states pass through


def test_ablate_rejects_bad_arguments():
    with pytest.raises(TypeError, match="units"):
        ablate([0.5])
    with pytest.raises(ValueError, match="non-negative"):
        ablate([-1])
    with pytest.raises(ValueError, match="one entry per unit"):
        ablate([0, 1], value=[1.0, 2.0, 3.0])
    edit = ablate([9])
    with pytest.raises(ValueError, match="out of range for 4 units of 'fc'"):
        edit(torch.zeros(2, 4), "fc")
    with pytest.raises(ValueError, match="dim=3 is out of range"):
        ablate([0], dim=3)(torch.zeros(2, 4), "fc")
    with pytest.raises(TypeError, match="returned dict"):
        edit({"a": 1}, "fc")


def test_edit_input_supplies_lstm_initial_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LSTM(3, 4))
    x = torch.randn(6, 2, 3)
    h0, c0 = torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    expected, (eh, ec) = model[0](x, (h0, c0))

    def with_state(args, kwargs, layer):
        assert layer == "0"
        return (args[0], (h0, c0)), kwargs

    with Trace(model, "0", edit_input=with_state, retain_input=True) as tr:
        out, (h, c) = model(x)
    assert torch.allclose(out, expected) and torch.allclose(h, eh) and torch.allclose(c, ec)
    assert torch.equal(tr.input[1][0], h0)                          # the record holds the edited input
    assert not torch.allclose(out, model(x)[0])


def test_edit_input_must_return_args_and_kwargs():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"edit_input for layer '0' must return \(args"):
        with Trace(model, "0", edit_input=lambda args, kwargs, layer: args[0]):
            model(torch.zeros(1, 2))
    assert hook_count(model) == 0
    with pytest.raises(TypeError, match="edit_output must be callable"):
        Trace(model, "0", edit_output="zeros")


def test_stop_prevents_later_layers_from_running():
    model = make_cnn()
    x = torch.randn(1, 3, 8, 8)
    with Trace(model, "0.2.0", stop=True) as tr:
        model(x)
        pytest.fail("the forward should have stopped")
    assert model[4].calls == 0
    assert tr.output.shape == (1, 8, 8, 8)
    model(x)
    assert model[4].calls == 1                                      # hooks are gone afterwards


def test_trace_dict_stops_after_the_last_layer_in_execution_order():
    model = make_cnn()
    x = torch.randn(1, 3, 8, 8)
    with TraceDict(model, ["3", "0.0"], stop=True) as td:           # listed out of order
        model(x)
    assert td["3"].output.shape == (1, 5)                           # 3 ran although listed first
    assert model[4].calls == 0
    with TraceDict(model, ["0.0", "0.2.0"], stop=True) as td:       # a second forward stops again
        model(x)
        model(x)
    assert model[4].calls == 0


def test_stop_forward_from_elsewhere_is_not_swallowed():
    model = make_cnn()
    with pytest.raises(StopForward):
        with Trace(model, "0.0"):
            raise StopForward("someone else's")


def test_detach_and_clone_semantics():
    model = make_cnn()
    x = torch.randn(1, 3, 8, 8)
    with TraceDict(model, ["0.2.0"]) as plain, TraceDict(model, ["0.2.0"], clone=True) as cloned:
        model(x)
    # ReLU(inplace=True) runs after 0.2.0: a shared record sees it, a cloned one does not.
    assert plain["0.2.0"].output.min() >= 0
    assert cloned["0.2.0"].output.min() < 0
    assert not cloned["0.2.0"].output.requires_grad

    with Trace(model, "0.0", detach=False) as tr:
        model(x)
    assert tr.output.requires_grad and tr.output.grad_fn is not None
    grad, = torch.autograd.grad(tr.output.sum(), model[0][0].bias)
    assert torch.allclose(grad, torch.full_like(grad, 64.0))       # 8 x 8 positions per channel
