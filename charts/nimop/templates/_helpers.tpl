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
docs/install.md explains every rule.
*/}}
{{- define "nimop.rules" -}}
# The watch (kopf), and reads of the object being reconciled.
- apiGroups: ["nimop.dev"]
  resources: ["nimservices"]
  verbs: ["get", "list", "watch"]
# One merge patch per pass that changed status; the operator never writes spec or metadata.
- apiGroups: ["nimop.dev"]
  resources: ["nimservices/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion, which the
# OwnerReferencesPermissionEnforcement admission plugin allows only to who may update this.
- apiGroups: ["nimop.dev"]
  resources: ["nimservices/finalizers"]
  verbs: ["update"]
# Server-side apply of the rendered children: a PATCH, authorized as create when the object
# does not exist yet. No update: apply never PUTs.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch"]
# Rendered only sometimes: owned ones the spec no longer asks for are listed and deleted.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "create", "patch", "delete"]
# Rollback: the pod template of the last good revision lives in its ReplicaSet.
- apiGroups: ["apps"]
  resources: ["replicasets"]
  verbs: ["list"]
# The replicas to probe, and their readiness gate condition.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["patch"]
# Referenced Secrets and ConfigMaps must exist: metadata-only GETs, never their data.
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get"]
# Transition Events on NimServices.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
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
Cluster-wide reads for GPU-aware rollouts (is there a free GPU for a surge replica?).
*/}}
{{- define "nimop.capacityRules" -}}
- apiGroups: [""]
  resources: ["nodes", "pods"]
  verbs: ["list"]
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
