"""A local Kubernetes lab for nimop: a real control plane built from upstream Go modules,
kwok-simulated GPU nodes on loopback addresses, and a pod runner that serves every simulated
NIM pod with the project's simulator.

Everything listens on, and dials only, 127.0.0.0/8. See docs/lab.md.

Starting labs: cluster (one lab, in-process), daemon (serve/up/down in a state directory),
binaries, nodes, leases (per-lab pod IP ranges), procs (finding a lab's processes).
The pod runner process: runner (wiring), informer (list+watch), kubelet and container (pod and
container lifecycles), containerenv, probes, podstatus, timing, proxy (Services), provisioner
(PVCs), controlapi; imageruntime (containers of the images the lab builds, labimages, run
under runc by oci) and apiservice (kubernetes.default.svc for them). For tests: control (the
runner's control API client), testing.
"""
