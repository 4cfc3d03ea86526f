"""Note [Host reads replayed], on the CPU: the mechanism that lets capture() hold a forward that reads
device values on the host. On a GPU the reads are those of CUDA tensors; here, the CPU's own
data-dependent ops stand in for them (HostReads(device_type="cpu"))."""

import pytest

torch = pytest.importorskip("torch")

from clear_native.host_reads import HostReads, reads_host  # noqa: E402


def forward(x):
    """A forward that branches on a device value, sizes a tensor by one, and gathers by nonzero()."""
    if bool((x > 0).all()):                 # a data-dependent branch
        y = x * 2
    else:
        y = x * 3
    n = int(x.abs().max())                   # a value that sets a shape
    idx = (x > 1).nonzero()                  # a data-dependent shape
    return y.sum() + torch.ones(n).sum() + idx.float().sum()


def test_replayed_reads_take_the_recorded_branches_and_shapes():
    first = torch.tensor([1.0, 2.0, 3.0])
    reads = HostReads(device_type="cpu")
    with reads.recording():
        out_first = forward(first)
    names = [name for name, _ in reads.recorded]
    assert names == ["aten._local_scalar_dense.default"] * 2 + ["aten.nonzero.default"]
    # Other data: eager would branch and size differently; replayed, the call is the recorded one's,
    # except for work on the new data itself (y = 3 * x here: the branch recorded is x * 2).
    other = torch.tensor([-1.0, 5.0, 7.0])
    with reads.replaying():
        out_other = forward(other)
    assert reads.replayed == 3 and reads.mismatches == 0
    expected = (other * 2).sum() + 3 + torch.tensor([[1.0], [2.0]]).sum()  # n = 3, idx of the first call
    assert out_other == pytest.approx(float(expected))
    assert out_first == pytest.approx(float((first * 2).sum() + 3 + 3))
    # The same data replayed gives what eager gave.
    with reads.replaying():
        assert forward(first) == out_first


def test_a_different_sequence_of_reads_runs_the_ops_and_counts_a_mismatch():
    reads = HostReads(device_type="cpu")
    with reads.recording():
        bool(torch.tensor([1.0]).sum() > 0)
    with reads.replaying():
        assert torch.tensor([0.0, 2.0]).nonzero().tolist() == [[1]]  # nonzero() was not recorded: it runs
    assert reads.mismatches == 1 and reads.replayed == 0


def test_only_reads_of_the_device_are_host_reads():
    a = torch.ones(3)
    scalar = torch.ops.aten._local_scalar_dense.default
    assert reads_host(scalar, (a,), {}, device_type="cpu")
    assert not reads_host(scalar, (a,), {}, device_type="cuda")  # a CPU tensor is on the host already
    assert not reads_host(torch.ops.aten.add.Tensor, (a, a), {}, device_type="cpu")


def test_nothing_recorded_means_nothing_intercepted():
    reads = HostReads(device_type="cpu")
    with reads.replaying():
        assert int(torch.tensor(4)) == 4
    assert reads.replayed == reads.mismatches == 0


def test_tensors_made_from_host_data_are_handed_back_as_made_in_the_first_call():
    from clear_native.host_reads import HostConstants

    def forward(x):
        zero = torch.tensor(0.0, dtype=x.dtype)       # transformers' eager mask does this on the GPU
        scale = torch.as_tensor([2.0, 3.0])
        same = torch.as_tensor(x)                     # already a tensor: not a copy from the host
        return torch.where(x > 0, x * scale, zero), zero, scale, same

    consts = HostConstants(device_type="cpu")
    x = torch.tensor([1.0, -1.0])
    with consts.recording():
        first, zero0, scale0, _ = forward(x)
    assert [(name, shape) for name, _, shape, _ in consts.recorded] == [("tensor", ()), ("as_tensor", (2,))]
    with consts.replaying():
        out, zero, scale, same = forward(x)
    assert zero is zero0 and scale is scale0  # the same tensors: no new copy from the host
    assert same is x and consts.replayed == 2 and consts.mismatches == 0
    assert torch.equal(out, first) and torch.equal(out, torch.tensor([2.0, 0.0]))
    assert torch.tensor(1.0) is not zero0  # torch.tensor is itself again outside
