"""The benchmark's mesh, written as YAML files for the control plane's file mode.

``services`` Services (one HTTP port each) in ``namespaces`` namespaces, ``pods`` Pods each
(labelled version v1/v2), and for the first ``rules`` services a DestinationRule with subsets
v1/v2 and a VirtualService splitting 90/10 between them. One file per service, so that a pod
change rewrites one small file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DOMAIN = "svc.cluster.local"


@dataclass(frozen=True)
class Registry:
    services: int = 1000
    pods: int = 3
    rules: int = 200
    namespaces: int = 10

    def namespace(self, i: int) -> str:
        return f"ns-{i % self.namespaces}"

    def name(self, i: int) -> str:
        return f"svc-{i}"

    def host(self, i: int) -> str:
        return f"{self.name(i)}.{self.namespace(i)}.{DOMAIN}"

    def cluster(self, i: int, subset: str = "") -> str:
        return f"outbound|80|{subset}|{self.host(i)}"

    def pod_ip(self, i: int, j: int, generation: int = 0) -> str:
        # 10.x.y.z: unique per (service, pod, generation); never routed, only configured.
        n = (i * self.pods + j) * 4 + (generation % 4)
        return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    def service_yaml(self, i: int, generations: dict[int, int] | None = None) -> str:
        ns, name = self.namespace(i), self.name(i)
        docs = [
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  selector: {{app: {name}}}\n"
            f"  ports: [{{name: http, port: 80, targetPort: 8080}}]\n"
        ]
        for j in range(self.pods):
            version = "v2" if j == self.pods - 1 else "v1"
            gen = (generations or {}).get(j, 0)
            docs.append(
                f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}-{j}\n  namespace: {ns}\n"
                f"  labels: {{app: {name}, version: {version}}}\n"
                f"status: {{podIP: {self.pod_ip(i, j, gen)}}}\n"
            )
        return "---\n".join(docs)

    def rules_yaml(self, i: int, v1: int = 90, v2: int = 10) -> str:
        ns, name = self.namespace(i), self.name(i)
        return (
            f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  host: {name}\n  subsets:\n"
            f"  - {{name: v1, labels: {{version: v1}}}}\n"
            f"  - {{name: v2, labels: {{version: v2}}}}\n"
            "---\n" + self.virtual_service_yaml(i, v1, v2)
        )

    def virtual_service_yaml(self, i: int, v1: int, v2: int) -> str:
        ns, name = self.namespace(i), self.name(i)
        return (
            f"apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n  hosts: [{name}]\n  http:\n  - route:\n"
            f"    - {{destination: {{host: {name}, subset: v1}}, weight: {v1}}}\n"
            f"    - {{destination: {{host: {name}, subset: v2}}, weight: {v2}}}\n"
        )

    def write(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        for i in range(self.services):
            write_atomic(root / "services" / f"{self.name(i)}.yaml", self.service_yaml(i))
        for i in range(self.rules):
            write_atomic(root / "rules" / f"{self.name(i)}.yaml", self.rules_yaml(i))

    def service_file(self, root: Path, i: int) -> Path:
        return root / "services" / f"{self.name(i)}.yaml"

    def rules_file(self, root: Path, i: int) -> Path:
        return root / "rules" / f"{self.name(i)}.yaml"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
