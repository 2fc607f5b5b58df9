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
--port={{ int64 .Values.router.port }}
--cluster-port={{ int64 .Values.router.clusterPort }}
--http-port={{ int64 .Values.router.httpPort }}
--max-prefill-tokens-per-worker={{ int64 .Values.router.maxPrefillTokensPerWorker }}
--max-queued={{ int64 .Values.router.maxQueued }}
--max-queued-tokens={{ int64 .Values.router.maxQueuedTokens }}
--prefill-timeout-ms={{ int64 .Values.router.prefillTimeoutMs }}
--lease-renew-ms={{ int64 .Values.router.leaseRenewMs }}
--max-migrations={{ int64 .Values.router.maxMigrations }}
--migration-patience-ms={{ int64 .Values.router.migrationPatienceMs }}
--decode-idle-timeout-ms={{ int64 .Values.router.decodeIdleTimeoutMs }}
--drain-timeout-s={{ int64 .Values.router.drainTimeoutS }}
--routing={{ .Values.router.routing }}
--prefix-index-blocks={{ int64 .Values.router.prefixIndexBlocks }}
--max-streams-per-key={{ int64 .Values.router.apiKeys.maxStreamsPerKey }}
--tokens-per-minute-per-key={{ int64 .Values.router.apiKeys.tokensPerMinutePerKey }}
{{- if .Values.router.publicTls.secretName }}
--public-tls-cert=/etc/tandem-public-tls/tls.crt
--public-tls-key=/etc/tandem-public-tls/tls.key
{{- end }}
{{- if .Values.router.apiKeys.secretName }}
--api-key-file=/etc/tandem-api-keys/{{ .Values.router.apiKeys.secretKey }}
{{- end }}
--metrics-port={{ int64 .Values.metrics.port }}
{{ include "tandem.clusterTlsFlags" . }}
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
--port={{ int64 $pool.port }}
--router={{ include "tandem.fullname" (dict "root" .root "component" "router-cluster") }}:{{ int64 $v.router.clusterPort }}
--kv-transport={{ $v.kv.transport }}
--block-size={{ int64 $v.kv.blockSize }}
--kv-cache-dtype={{ $v.kv.cacheDtype }}
--dtype={{ $v.model.dtype }}
--quantization={{ $v.model.quantization }}
--tp={{ int64 $pool.tp }}
--drain-timeout-s={{ int64 $pool.drainTimeoutS }}
--metrics-port={{ int64 $v.metrics.port }}
--max-num-batched-tokens={{ int64 $pool.engine.maxNumBatchedTokens }}
--max-num-seqs={{ int64 $pool.engine.maxNumSeqs }}
--kv-cache-memory={{ int64 $pool.engine.kvCacheMemoryMib }}
--num-kv-blocks={{ int64 $pool.engine.numKvBlocks }}
--no-prefix-caching={{ $pool.engine.noPrefixCaching }}
--no-chunked-prefill={{ $pool.engine.noChunkedPrefill }}
--batching={{ $pool.engine.batching }}
--scheduling-policy={{ $pool.engine.schedulingPolicy }}
--batch-size={{ int64 $pool.engine.batchSize }}
--max-batch-delay-ms={{ int64 $pool.engine.maxBatchDelayMs }}
{{- if eq .component "prefill" }}
--kv-flush-timeout-ms={{ int64 $pool.kvFlushTimeoutMs }}
--kv-sender-threads={{ int64 $pool.kvSenderThreads }}
{{- else }}
--reservation-timeout-ms={{ int64 $pool.reservationTimeoutMs }}
--release-grace-ms={{ int64 $pool.releaseGraceMs }}
{{- end }}
{{ include "tandem.clusterTlsFlags" .root }}
{{- range $pool.extraArgs }}
{{ . }}
{{- end }}
{{- end -}}

{{/*
mTLS inside the cluster (clusterTls). Each pod mounts its role's Secret
(tls.crt, tls.key, ca.crt: what a cert-manager Certificate writes) at this
directory, read-only. Context: anything.
*/}}
{{- define "tandem.clusterTlsDir" -}}
/etc/tandem-cluster-tls
{{- end -}}

{{/*
The cluster TLS flags of every binary, one per line: the mounted role
certificate, or --insecure-cluster when clusterTls is off. Context: the root.
*/}}
{{- define "tandem.clusterTlsFlags" -}}
{{- if .Values.clusterTls.enabled -}}
{{- $dir := include "tandem.clusterTlsDir" . -}}
--tls-ca={{ $dir }}/ca.crt
--tls-cert={{ $dir }}/tls.crt
--tls-key={{ $dir }}/tls.key
{{- else -}}
--insecure-cluster=true
{{- end -}}
{{- end -}}

{{/*
The role a component's certificate names (its DNS SAN), which the binary
checks at start and its peers check on every call. Context: dict component.
*/}}
{{- define "tandem.clusterRole" -}}
{{- if eq .component "router" -}}
tandem-router
{{- else -}}
{{- printf "tandem-%s-worker" .component -}}
{{- end -}}
{{- end -}}

{{/*
The Secret a component mounts: clusterTls.secretNames.<component>, or
"<release>-<component>-tls". Context: dict root, component.
*/}}
{{- define "tandem.clusterTlsSecret" -}}
{{- $name := index .root.Values.clusterTls.secretNames .component -}}
{{- $name | default (include "tandem.fullname" (dict "root" .root "component" (printf "%s-tls" .component))) -}}
{{- end -}}

{{/*
What one probe checks. With clusterTls: an exec of the image's `tandem
health` against the pod IP (where the kubelet's gRPC probe would dial;
bracketed when IPv6), with the pod's own certificate (a cluster port takes
only clients from the cluster CA) and --tls-peer the pod's own role (the
server's certificate names its role, not its address). Its deadline is one
second under the probe's timeout, so a slow server fails the probe with
tandem health's message rather than the kubelet's kill. Without: a grpc:
probe. Context: dict root, role, port, service ("": the whole server).
*/}}
{{- define "tandem.probeCheck" -}}
{{- $v := .root.Values -}}
{{- if $v.clusterTls.enabled -}}
{{- $deadline := sub $v.probes.timeoutSeconds 1 -}}
{{- if lt $deadline 1 -}}
{{- fail (printf "probes.timeoutSeconds %v: at least 2 with clusterTls.enabled (tandem health's deadline is one second less)" $v.probes.timeoutSeconds) -}}
{{- end -}}
{{- $dir := include "tandem.clusterTlsDir" .root -}}
{{- $service := "" -}}
{{- with .service -}}
{{- $service = printf " --service=%s" . -}}
{{- end -}}
exec:
  command:
    - /bin/sh
    - -c
    - {{ printf "a=$POD_IP; case $a in *:*) a=\"[$a]\";; esac; exec %s/tandem health --addr=\"$a:%v\"%s --timeout-s=%v --tls-ca=%s/ca.crt --tls-cert=%s/tls.crt --tls-key=%s/tls.key --tls-peer=%s" $v.image.binDir .port $service $deadline $dir $dir $dir .role | quote }}
{{- else -}}
grpc:
  port: {{ .port }}
  {{- with .service }}
  service: {{ . }}
  {{- end }}
{{- end -}}
{{- end -}}

{{/*
The three probes (grpc.health.v1; tandem.probeCheck says how they ask).
Readiness asks `port` for `ready` ("": the whole server), which a binary
reports NOT_SERVING while it cannot take work: the router until a prefill
and a decode worker are registered, every binary while it drains. Startup
and liveness ask `livePort` for `live`, a service the binary reports
SERVING for as long as it runs (the router's is on its cluster listener; a
worker's on its one port).
Context: dict root, component, port, ready, livePort, live.
*/}}
{{- define "tandem.probes" -}}
{{- $p := .root.Values.probes -}}
{{- $role := include "tandem.clusterRole" . -}}
startupProbe:
  {{- include "tandem.probeCheck" (dict "root" .root "role" $role "port" .livePort "service" .live) | nindent 2 }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
readinessProbe:
  {{- include "tandem.probeCheck" (dict "root" .root "role" $role "port" .port "service" .ready) | nindent 2 }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
livenessProbe:
  {{- include "tandem.probeCheck" (dict "root" .root "role" $role "port" .livePort "service" .live) | nindent 2 }}
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
Volumes: the flags ConfigMap, the model volume when there is one, and the
component's cluster TLS Secret when clusterTls is on.
Context: dict root, component.
*/}}
{{- define "tandem.volumes" -}}
{{- $mv := .root.Values.model.volume -}}
- name: flags
  configMap:
    name: {{ include "tandem.fullname" (dict "root" .root "component" "flags") }}
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
{{- if .root.Values.clusterTls.enabled }}
- name: cluster-tls
  secret:
    secretName: {{ include "tandem.clusterTlsSecret" . }}
{{- end }}
{{- end -}}

{{/*
Mounts matching tandem.volumes (all read-only). Context: dict root,
component.
*/}}
{{- define "tandem.volumeMounts" -}}
{{- $v := .root.Values -}}
- name: flags
  mountPath: /etc/tandem
  readOnly: true
{{- if ne $v.model.volume.type "none" }}
- name: model
  mountPath: {{ $v.model.volume.mountPath }}
  readOnly: true
{{- end }}
{{- if $v.clusterTls.enabled }}
- name: cluster-tls
  mountPath: {{ include "tandem.clusterTlsDir" . }}
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
