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
