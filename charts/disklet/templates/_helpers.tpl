{{/* Chart name. */}}
{{- define "disklet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: <release>-disklet, or <release> when it already says disklet. */}}
{{- define "disklet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "disklet.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "disklet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "disklet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: disklet
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "operator"). */}}
{{- define "disklet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "disklet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Image of one component: <registry>/disklet-<component>:<tag or appVersion>. */}}
{{- define "disklet.image" -}}
{{- $registry := required "image.registry is required" .ctx.Values.image.registry -}}
{{- $tag := default .ctx.Chart.AppVersion .ctx.Values.image.tag -}}
{{- if eq $tag "latest" -}}{{- fail (printf "image.tag=latest is refused: pin a version (image.tag=%s, or leave image.tag empty for the chart's appVersion); latest changes under a running DaemonSet, so nodes would run different agents" .ctx.Chart.AppVersion) -}}{{- end -}}
{{- printf "%s/disklet-%s:%s" (trimSuffix "/" $registry) .component $tag -}}
{{- end -}}

{{/* The validated file-devices base directory. */}}
{{- define "disklet.fileDevicesDirectory" -}}
{{- $dir := required "fileDevicesDirectory is required (absolute path, never /)" .Values.fileDevicesDirectory -}}
{{- if or (not (hasPrefix "/" $dir)) (eq (clean $dir) "/") -}}
{{- fail (printf "fileDevicesDirectory must be absolute and never /, got %q" $dir) -}}
{{- end -}}
{{- clean $dir -}}
{{- end -}}

{{/* Whether the operator uses Kopf peering; fails on replicas > 1 without it. */}}
{{- define "disklet.operatorPeering" -}}
{{- if and (gt (int .Values.operator.replicaCount) 1) (not .Values.operator.peering.enabled) -}}
{{- fail "operator.replicaCount > 1 needs operator.peering.enabled=true (Kopf peering), or replicas would act at once" -}}
{{- end -}}
{{- if .Values.operator.peering.enabled -}}true{{- end -}}
{{- end -}}

{{/* Fails when the operator and the agent share a port: both may run on one node's network
(hostNetwork), where the second pod could not bind it. */}}
{{- define "disklet.distinctPorts" -}}
{{- $seen := dict -}}
{{- range $name, $port := dict "operator.healthPort" .Values.operator.healthPort "operator.metricsPort" .Values.operator.metricsPort "agent.healthPort" .Values.agent.healthPort "agent.metricsPort" .Values.agent.metricsPort -}}
{{- $key := toString (int $port) -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "%s and %s are both %s: the operator's and the agent's ports must differ (both pods may share a node's network)" (get $seen $key) $name $key) -}}
{{- end -}}
{{- $_ := set $seen $key $name -}}
{{- end -}}
{{- end -}}

{{/* Agent tolerations: agent.tolerations, plus the control-plane taint when agent.controlPlaneNodes. */}}
{{- define "disklet.agentTolerations" -}}
{{- $tol := .Values.agent.tolerations | default list -}}
{{- if .Values.agent.controlPlaneNodes -}}
{{- $tol = append $tol (dict "key" "node-role.kubernetes.io/control-plane" "operator" "Exists" "effect" "NoSchedule") -}}
{{- end -}}
{{- toYaml $tol -}}
{{- end -}}

{{/* Agent affinity: agent.affinity; unless agent.controlPlaneNodes, every required node selector
term also demands that the node is not a control-plane node (untainted control planes included). */}}
{{- define "disklet.agentAffinity" -}}
{{- $aff := deepCopy (.Values.agent.affinity | default dict) -}}
{{- if not .Values.agent.controlPlaneNodes -}}
{{- $notCP := dict "key" "node-role.kubernetes.io/control-plane" "operator" "DoesNotExist" -}}
{{- $na := get $aff "nodeAffinity" | default dict -}}
{{- $req := get $na "requiredDuringSchedulingIgnoredDuringExecution" | default dict -}}
{{- $terms := get $req "nodeSelectorTerms" | default (list dict) -}}
{{- $out := list -}}
{{- range $terms -}}
{{- $term := deepCopy . -}}
{{- $_ := set $term "matchExpressions" (append (get $term "matchExpressions" | default list) $notCP) -}}
{{- $out = append $out $term -}}
{{- end -}}
{{- $_ := set $req "nodeSelectorTerms" $out -}}
{{- $_ := set $na "requiredDuringSchedulingIgnoredDuringExecution" $req -}}
{{- $_ := set $aff "nodeAffinity" $na -}}
{{- end -}}
{{- toYaml $aff -}}
{{- end -}}

{{/* Values a new user writes by habit that this chart spells differently: refused with the right name. */}}
{{- define "disklet.checkValues" -}}
{{- if hasKey .Values "imagePullSecrets" -}}
{{- fail "imagePullSecrets is not a value of this chart: set image.pullSecrets (e.g. --set 'image.pullSecrets[0].name=regcred'); it applies to the operator and the agent" -}}
{{- end -}}
{{- end -}}

{{/* Whether agent.extraEnv turns on the loop-device test switch (DISKLET_ALLOW_LOOP_TARGETS). */}}
{{- define "disklet.loopTargetsAllowed" -}}
{{- range .Values.agent.extraEnv -}}
{{- if and (eq (toString .name) "DISKLET_ALLOW_LOOP_TARGETS") (has (lower (trim (toString .value))) (list "1" "true" "yes" "on")) -}}true{{- end -}}
{{- end -}}
{{- end -}}
