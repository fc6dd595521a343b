from __future__ import annotations

from pathlib import Path

from nimlab.cluster import crd_names

CRD = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {}\n"


def test_crd_names_come_from_files_and_kustomizations(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(CRD.format("nodepools.karpenter.sh"))
    (tmp_path / "b.yaml").write_text(
        CRD.format("nimservices.nimop.dev") + "---\nkind: ConfigMap\nmetadata: {name: x}\n"
    )
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - b.yaml\n")
    assert crd_names(tmp_path / "a.yaml") == ["nodepools.karpenter.sh"]
    assert crd_names(tmp_path) == ["nimservices.nimop.dev"]


def test_the_repositorys_crds_are_found() -> None:
    crds = Path(__file__).resolve().parents[2] / "crds"
    assert sorted(crd_names(crds)) == ["nimcaches.nimop.dev", "nimservices.nimop.dev"]
