{{/* The DynamoCluster's name: clusterName, else the release name. */}}
{{- define "dynamokv-cluster.name" -}}
{{- $name := default .Release.Name .Values.clusterName }}
{{- if or (gt (len $name) 52) (not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name)) }}
{{- fail (printf "the DynamoCluster name %q must be a DNS-1035 label of at most 52 characters (set clusterName)" $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/*
The CRD's cross-field rules (x-kubernetes-validations), checked before the API server
would refuse the object, with the same messages.
*/}}
{{- define "dynamokv-cluster.validate" -}}
{{- $r := .Values.replication }}
{{- if hasKey $r "false" }}
{{- fail "replication: write the key as \"n\" (quoted): YAML 1.1 reads a bare n as false" }}
{{- end }}
{{- if gt (int $r.r) (int (index $r "n")) }}
{{- fail "replication.r must be between 1 and replication.n" }}
{{- end }}
{{- if gt (int $r.w) (int (index $r "n")) }}
{{- fail "replication.w must be between 1 and replication.n" }}
{{- end }}
{{- if and (ne (int .Values.replicas) 0) (lt (int .Values.replicas) (int (index $r "n"))) }}
{{- fail "replicas must be at least replication.n (or 0 to pause the cluster): every key is stored on n distinct nodes" }}
{{- end }}
{{- end }}

{{- define "dynamokv-cluster.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: dynamokv
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
