{{/* The chart's name, shortened to a DNS label. */}}
{{- define "dynamokv-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object this chart creates. */}}
{{- define "dynamokv-operator.fullname" -}}
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

{{- define "dynamokv-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: immutable in a Deployment, so only name and instance. */}}
{{- define "dynamokv-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dynamokv-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dynamokv-operator.labels" -}}
helm.sh/chart: {{ include "dynamokv-operator.chart" . }}
{{ include "dynamokv-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: dynamokv
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "dynamokv-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dynamokv-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "dynamokv-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces served when not cluster-wide, as a JSON list (default: the release's). */}}
{{- define "dynamokv-operator.namespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toJson .Values.watch.namespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/*
What the operator may do in a namespace it serves: exactly the API calls of
operator/dynamo_operator (kube.py via handlers.py and reconcile.py) and of Kopf.
tests/packaging/test_rbac.py derives the same list from the code and compares.
*/}}
{{- define "dynamokv-operator.hostRules" -}}
# spec.autoReplace, read-only and cluster-scoped: Nodes, to tell that a pod's Kubernetes
# node is gone; a PersistentVolume, to tell which node a local volume is tied to.
- apiGroups: [""]
  resources: [nodes]
  verbs: [list]
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get]
{{- end }}

{{- define "dynamokv-operator.namespacedRules" -}}
# DynamoClusters: Kopf lists and watches them, and patches annotations and finalizers
# (its progress records); the handlers patch the status subresource.
- apiGroups: [dynamokv.io]
  resources: [dynamoclusters]
  verbs: [list, watch, patch]
- apiGroups: [dynamokv.io]
  resources: [dynamoclusters/status]
  verbs: [patch]
# Owned objects carry ownerReferences with blockOwnerDeletion: API servers enforcing
# OwnerReferencesPermissionEnforcement (e.g. OpenShift) require update on the owner's
# finalizers to set that.
- apiGroups: [dynamokv.io]
  resources: [dynamoclusters/finalizers]
  verbs: [update]
# What the operator builds and converges (reconcile.ensure / ensure_statefulset).
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch]
# The auth Secret: read for the admin token; created once when generated, its data never
# changed (patch: only its labels and owner reference, which follow pvcRetention.whenDeleted).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch]
# Pods: listed to observe the nodes; deleted one at a time to roll an upgrade, or to
# replace a member whose Kubernetes node is gone (spec.autoReplace).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, delete]
# PVCs (spec.autoReplace): read to find the volume of a pod that cannot be scheduled;
# deleted with the pod of a member being replaced, so it comes back with a fresh one.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, delete]
# Events on DynamoClusters (kopf.event / kopf.warn post core/v1 events).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Where the monitors look: every namespace, or the served ones. */}}
{{- define "dynamokv-operator.monitorNamespaces" -}}
namespaceSelector:
{{- if .Values.watch.clusterWide }}
  any: true
{{- else }}
  matchNames:
  {{- range include "dynamokv-operator.namespaces" . | fromJsonArray }}
    - {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Series labels shared by both monitors: the DynamoCluster and the node. */}}
{{- define "dynamokv-operator.monitorRelabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_instance]
  targetLabel: dynamokv_cluster
- sourceLabels: [__meta_kubernetes_pod_name]
  targetLabel: dynamokv_node
{{- end }}
