{{/*
Names and labels.
*/}}
{{- define "nimop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nimop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "nimop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nimop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nimop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nimop.labels" -}}
helm.sh/chart: {{ include "nimop.chart" . }}
{{ include "nimop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: nimop
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "nimop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nimop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nimop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The Lease the replicas elect a leader on (NIMOP_LEASE_NAME), in the release namespace.
*/}}
{{- define "nimop.leaseName" -}}
{{- include "nimop.fullname" . }}
{{- end }}

{{/*
What the operator does in every namespace it manages. One list, used by the ClusterRole
(cluster-wide mode) and by each namespace's Role (namespace-scoped mode), and kept identical in
content to deploy/kustomize/base/rbac.yaml (tests/integration/test_install.py compares them).
docs/install.md explains every rule. No rule names Secrets: the operator never reads them.
*/}}
{{- define "nimop.rules" -}}
# Its own resources: watched (list, watch; get for single reads).
- apiGroups: ["nimop.dev"]
  resources: ["nimservices", "nimcaches"]
  verbs: ["get", "list", "watch"]
# One merge patch per pass that changed status; the operator never writes spec or metadata.
- apiGroups: ["nimop.dev"]
  resources: ["nimservices/status", "nimcaches/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion, which the
# OwnerReferencesPermissionEnforcement admission plugin allows only to who may update this.
- apiGroups: ["nimop.dev"]
  resources: ["nimservices/finalizers", "nimcaches/finalizers"]
  verbs: ["update"]
# Children: watched by the managed-by label (list, watch) and server-side applied (a PATCH,
# authorized as create when the object does not exist yet). No get, no update: the caches
# answer reads, and apply never PUTs.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"]
# Rendered only sometimes: owned ones the spec no longer asks for are deleted (prune). A NimCache
# Job is replaced when its spec changes. get: a metadata-only check that a claim the spec names
# (spec.cache.existingClaim) exists.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Rollout state; get: a rollback reads the pod template of one old ReplicaSet.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["get", "list", "watch"]
# The replicas to probe, and their readiness gate condition.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
# Referenced ConfigMaps must exist: metadata-only GETs, never their data.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# create: transition Events on NimServices and NimCaches. list, watch: why pods wait (the
# ReplicaSet's FailedCreate, the cluster autoscaler's and Karpenter's pod Events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list", "watch"]
{{- if eq .Values.probe.mode "proxy" }}
# probe.mode=proxy: NIM probes go through the API server's pod proxy.
- apiGroups: [""]
  resources: ["pods/proxy"]
  verbs: ["get"]
{{- end }}
{{- with .Values.rbac.extraRules }}
# rbac.extraRules (kinds that custom templates render).
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Cluster-wide reads for GPU placement and node autoscaling (rbac.clusterCapacityAccess): is there
a free GPU for a surge replica, can any node ever fit a pod, is Karpenter launching one. Read
only; without it the operator always surges and leaves placement to the scheduler.
*/}}
{{- define "nimop.capacityRules" -}}
# Nodes, and the GPU requests of the pods bound to them.
- apiGroups: [""]
  resources: ["nodes", "pods"]
  verbs: ["list", "watch"]
# Karpenter's NodePools (limits, what they can launch) and NodeClaims (nodes being launched).
- apiGroups: ["karpenter.sh"]
  resources: ["nodepools", "nodeclaims"]
  verbs: ["list", "watch"]
{{- end }}

{{/*
Leader election, granted in the release namespace only (both modes): the one Lease the replicas
campaign for. Kept identical in content to the Role in deploy/kustomize/base/rbac.yaml.
*/}}
{{- define "nimop.leaseRules" -}}
# Read, renew and (on a clean exit) release the one Lease: PUTs conditional on its
# resourceVersion, so two replicas can never both win.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "nimop.leaseName" . | quote }}]
  verbs: ["get", "update"]
# Create it when it does not exist yet. A create cannot be restricted by name.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
{{- end }}
