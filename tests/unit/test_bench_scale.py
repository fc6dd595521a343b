"""The scale benchmark's reading of the API server's ClusterIP allocation metrics."""

from bench import scale

TEXT = """# HELP kube_apiserver_clusterip_allocator_allocation_duration_seconds Duration
# TYPE kube_apiserver_clusterip_allocator_allocation_duration_seconds histogram
kube_apiserver_clusterip_allocator_allocation_duration_seconds_bucket{le="0.005"} 117
kube_apiserver_clusterip_allocator_allocation_duration_seconds_sum{cidr="10.96.0.0/16"} 49.5
kube_apiserver_clusterip_allocator_allocation_duration_seconds_count{cidr="10.96.0.0/16"} 300
kube_apiserver_clusterip_allocator_allocation_duration_seconds_count{cidr="fd00::/108"} 2
apiserver_request_total{code="200",resource="a b"} 7
broken_line{a="b"} not-a-number
"""


def test_parse_metrics_keeps_series_with_labels_and_skips_comments_and_garbage() -> None:
    found = scale.parse_metrics(TEXT)
    assert found['apiserver_request_total{code="200",resource="a b"}'] == 7
    assert not any(key.startswith(("#", "broken_line")) for key in found)


def test_allocation_totals_add_every_service_cidr() -> None:
    found = scale.parse_metrics(TEXT)
    assert scale.metric_sum(found, scale.ALLOCATION + "_count") == 302
    assert scale.metric_sum(found, scale.ALLOCATION + "_sum") == 49.5
