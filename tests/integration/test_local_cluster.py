"""The local Ray head that `make serve` and the test session start: stopping it leaves nothing behind."""

from __future__ import annotations

from serve_app.local_cluster import _matching_pids, _running, _with_descendants, start_local_cluster, stop_local_cluster


def test_stop_ends_every_process_of_the_cluster_and_only_those(ray_cluster):
    cluster = start_local_cluster(num_cpus=1)
    named = _matching_pids([str(cluster.temp_dir)])
    tree = _with_descendants(named)
    # Ray's agents rename themselves, so some of the cluster is found only as children of the raylet.
    assert named and tree > named
    # Stopped in Ray's order, every process exits on SIGTERM: none has to be killed.
    assert stop_local_cluster(cluster) == set()
    assert not _running(tree)
    assert not cluster.temp_dir.exists()
    # The session's own cluster, started the same way, is untouched.
    assert _running(_matching_pids([str(ray_cluster.temp_dir)]))
