{{/*
Helpers. Templates stay inside the Go-template subset documented at the top
of tests/deploy/gotemplate.py (the renderer the chart's test uses, since CI
has no helm binary). Helpers that need more than the root take a dict:
  root       the chart's root object ($)
  component  router | prefill | decode | flags
*/}}

{{/*
"<release>-<component>". The router's public Service is "<release>-router";
workers reach its cluster listener at "<release>-router-cluster" (their
--router).
*/}}
{{- define "tandem.fullname" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: must not change between upgrades (selectors are immutable). */}}
{{- define "tandem.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tandem.labels" -}}
{{ include "tandem.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/*
The router's flags, one per line (the router.flags key of the ConfigMap).
Context: the root.
*/}}
{{- define "tandem.routerFlags" -}}
--model={{ .Values.model.path }}
--host={{ .Values.router.host }}
--port={{ .Values.router.port }}
--cluster-port={{ .Values.router.clusterPort }}
--max-prefill-tokens-per-worker={{ .Values.router.maxPrefillTokensPerWorker }}
--max-queued={{ .Values.router.maxQueued }}
--max-queued-tokens={{ .Values.router.maxQueuedTokens }}
--prefill-timeout-ms={{ .Values.router.prefillTimeoutMs }}
--lease-renew-ms={{ .Values.router.leaseRenewMs }}
--max-migrations={{ .Values.router.maxMigrations }}
--migration-patience-ms={{ .Values.router.migrationPatienceMs }}
--decode-idle-timeout-ms={{ .Values.router.decodeIdleTimeoutMs }}
--drain-timeout-s={{ .Values.router.drainTimeoutS }}
--max-streams-per-key={{ .Values.router.apiKeys.maxStreamsPerKey }}
--tokens-per-minute-per-key={{ .Values.router.apiKeys.tokensPerMinutePerKey }}
{{- if .Values.router.publicTls.secretName }}
--public-tls-cert=/etc/tandem-public-tls/tls.crt
--public-tls-key=/etc/tandem-public-tls/tls.key
{{- end }}
{{- if .Values.router.apiKeys.secretName }}
--api-key-file=/etc/tandem-api-keys/{{ .Values.router.apiKeys.secretKey }}
{{- end }}
--metrics-port={{ .Values.metrics.port }}
{{- range .Values.router.extraArgs }}
{{ . }}
{{- end }}
{{- end -}}

{{/*
A worker pool's flags, one per line. --host and --worker-id are per pod and
come from the downward API in the container command instead.
Context: dict root, component (prefill | decode).
*/}}
{{- define "tandem.workerFlags" -}}
{{- $v := .root.Values -}}
{{- $pool := index $v .component -}}
--model={{ $v.model.path }}
--port={{ $pool.port }}
--router={{ include "tandem.fullname" (dict "root" .root "component" "router-cluster") }}:{{ $v.router.clusterPort }}
--kv-transport={{ $v.kv.transport }}
--block-size={{ $v.kv.blockSize }}
--kv-cache-dtype={{ $v.kv.cacheDtype }}
--dtype={{ $v.model.dtype }}
--tp={{ $pool.tp }}
--drain-timeout-s={{ $pool.drainTimeoutS }}
--metrics-port={{ $v.metrics.port }}
--max-num-batched-tokens={{ $pool.engine.maxNumBatchedTokens }}
--max-num-seqs={{ $pool.engine.maxNumSeqs }}
--kv-cache-memory={{ $pool.engine.kvCacheMemoryMib }}
--num-kv-blocks={{ $pool.engine.numKvBlocks }}
--no-prefix-caching={{ $pool.engine.noPrefixCaching }}
--no-chunked-prefill={{ $pool.engine.noChunkedPrefill }}
--batching={{ $pool.engine.batching }}
--scheduling-policy={{ $pool.engine.schedulingPolicy }}
--batch-size={{ $pool.engine.batchSize }}
--max-batch-delay-ms={{ $pool.engine.maxBatchDelayMs }}
{{- if eq .component "prefill" }}
--kv-flush-timeout-ms={{ $pool.kvFlushTimeoutMs }}
--kv-sender-threads={{ $pool.kvSenderThreads }}
{{- else }}
--reservation-timeout-ms={{ $pool.reservationTimeoutMs }}
--release-grace-ms={{ $pool.releaseGraceMs }}
{{- end }}
{{- range $pool.extraArgs }}
{{ . }}
{{- end }}
{{- end -}}

{{/*
The three gRPC probes (grpc.health.v1). Readiness asks `port` for the whole
server (service ""), which a binary reports NOT_SERVING while it cannot take
work: the router until a prefill and a decode worker are registered, every
binary while it drains. Startup and liveness ask `livePort` for `live`, a
service the binary reports SERVING for as long as it runs (the router's is
on its cluster listener; a worker's on its one port).
Context: dict root, port, livePort, live.
*/}}
{{- define "tandem.probes" -}}
{{- $p := .root.Values.probes -}}
startupProbe:
  grpc:
    port: {{ .livePort }}
    service: {{ .live }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
readinessProbe:
  grpc:
    port: {{ .port }}
    {{- with .ready }}
    service: {{ . }}
    {{- end }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
livenessProbe:
  grpc:
    port: {{ .livePort }}
    service: {{ .live }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
{{- end -}}

{{/*
Container resources: the pool's requests and limits, plus nvidia.com/gpu
(in both, as Kubernetes wants for extended resources) when gpus > 0.
Context: dict root, c (the component's values: resources, and gpus or 0).
*/}}
{{- define "tandem.resources" -}}
{{- $r := .c.resources -}}
{{- if or $r.requests .gpus -}}
requests:
  {{- range $k, $q := $r.requests }}
  {{ $k }}: {{ $q | quote }}
  {{- end }}
  {{- if .gpus }}
  nvidia.com/gpu: {{ .gpus }}
  {{- end }}
{{- end }}
{{- if or $r.limits .gpus }}
limits:
  {{- range $k, $q := $r.limits }}
  {{ $k }}: {{ $q | quote }}
  {{- end }}
  {{- if .gpus }}
  nvidia.com/gpu: {{ .gpus }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
The pod-level settings every component shares, then the component's own
scheduling constraints. Context: dict root, c (the component's values,
drainTimeoutS among them).
*/}}
{{- define "tandem.podSpecCommon" -}}
{{- $v := .root.Values -}}
{{- /* Above the drain: the binary exits once drained, and the 15 s cover the
       rest of its shutdown (telling the router, the gRPC shutdown). */}}
terminationGracePeriodSeconds: {{ add .c.drainTimeoutS 15 }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $v.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .c.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Volumes: the flags ConfigMap, and the model volume when there is one.
Context: the root.
*/}}
{{- define "tandem.volumes" -}}
{{- $mv := .Values.model.volume -}}
- name: flags
  configMap:
    name: {{ include "tandem.fullname" (dict "root" . "component" "flags") }}
{{- if eq $mv.type "pvc" }}
- name: model
  persistentVolumeClaim:
    claimName: {{ required "model.volume.claimName is required for type pvc" $mv.claimName }}
    readOnly: true
{{- else if eq $mv.type "hostPath" }}
- name: model
  hostPath:
    path: {{ required "model.volume.hostPath is required for type hostPath" $mv.hostPath }}
    type: Directory
{{- else if eq $mv.type "emptyDir" }}
- name: model
  emptyDir: {}
{{- else if ne $mv.type "none" }}
{{- fail (printf "model.volume.type %q: use none, pvc, hostPath or emptyDir" $mv.type) }}
{{- end }}
{{- end -}}

{{/* Mounts matching tandem.volumes (the model read-only). Context: the root. */}}
{{- define "tandem.volumeMounts" -}}
- name: flags
  mountPath: /etc/tandem
  readOnly: true
{{- if ne .Values.model.volume.type "none" }}
- name: model
  mountPath: {{ .Values.model.volume.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The init container that fills the model volume; included only when
model.init.enabled. Context: the root.
*/}}
{{- define "tandem.initContainers" -}}
{{- $m := .Values.model -}}
{{- if eq $m.volume.type "none" }}
{{- fail "model.init.enabled needs a model.volume.type to fill (emptyDir, pvc or hostPath)" }}
{{- end -}}
initContainers:
  - name: model-init
    image: {{ required "model.init.image is required with model.init.enabled" $m.init.image | quote }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command:
      {{- toYaml $m.init.command | nindent 6 }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: model
        mountPath: {{ $m.volume.mountPath }}
{{- end -}}
