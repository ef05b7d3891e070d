{{/* ---------------------------------------------------------------- names */}}

{{- define "bo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bo.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object: (dict "root" $ "component" "checkout") */}}
{{- define "bo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: boutique-orders
{{- if .root.Chart.AppVersion }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end }}
{{ include "bo.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "bo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bo.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bo.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "bo.postgres.image" -}}
{{- $i := .Values.postgresql.image -}}
{{- if $i.digest -}}
{{- printf "%s@%s" $i.repository $i.digest -}}
{{- else -}}
{{- printf "%s:%s" $i.repository $i.tag -}}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------------- security */}}

{{/* The pod security context of every pod: (dict "uid" 65532) */}}
{{- define "bo.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The container security context of every container. */}}
{{- define "bo.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The uid our image runs as (distroless "nonroot"). */}}
{{- define "bo.uid" -}}65532{{- end -}}

{{/* ------------------------------------------------------- database */}}

{{- define "bo.cnpg.clusterName" -}}
{{- .Values.cloudnativepg.clusterName | default (printf "%s-pg" (include "bo.fullname" .)) | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "bo.db.host" -}}
{{- $mode := .Values.database.mode -}}
{{- if eq $mode "bundled" -}}{{ .Values.postgresql.serviceName }}
{{- else if eq $mode "cloudnativepg" -}}{{ include "bo.cnpg.clusterName" . }}-rw
{{- else -}}{{ required "database.external.host is required when database.mode is external" .Values.database.external.host }}
{{- end -}}
{{- end -}}

{{- define "bo.db.port" -}}
{{- if eq .Values.database.mode "external" -}}{{ int .Values.database.external.port }}{{- else -}}5432{{- end -}}
{{- end -}}

{{/* The Secret holding the chart's passwords (generated or existing). */}}
{{- define "bo.credentials.secretName" -}}
{{- .Values.database.existingSecret | default (printf "%s-db-credentials" (include "bo.fullname" .)) -}}
{{- end -}}

{{/* The server certificate Secret of the bundled PostgreSQL. */}}
{{- define "bo.postgres.tlsSecretName" -}}
{{- if eq .Values.postgresql.tls.mode "existingSecret" -}}
{{- required "postgresql.tls.existingSecret is required when postgresql.tls.mode is existingSecret" .Values.postgresql.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-postgres-tls" (include "bo.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Where clients find the CA certificate: "name key", or "" for none. */}}
{{- define "bo.db.caSource" -}}
{{- $mode := .Values.database.mode -}}
{{- if eq $mode "bundled" -}}
{{ include "bo.postgres.tlsSecretName" . }} ca.crt
{{- else if eq $mode "cloudnativepg" -}}
{{ include "bo.cnpg.clusterName" . }}-ca ca.crt
{{- else if .Values.database.external.caSecret.name -}}
{{ .Values.database.external.caSecret.name }} {{ .Values.database.external.caSecret.key }}
{{- end -}}
{{- end -}}

{{/* Where the schema owner's password is: "name key". */}}
{{- define "bo.owner.passwordSource" -}}
{{- $db := .Values.database -}}
{{- if eq $db.mode "cloudnativepg" -}}
{{ include "bo.cnpg.clusterName" . }}-app password
{{- else if and (eq $db.mode "external") $db.external.ownerPasswordSecret.name -}}
{{ $db.external.ownerPasswordSecret.name }} {{ $db.external.ownerPasswordSecret.key }}
{{- else if and (eq $db.mode "external") (not $db.existingSecret) -}}
{{- fail "database.mode external needs the schema owner's password: set database.external.ownerPasswordSecret.name or database.existingSecret" -}}
{{- else -}}
{{ include "bo.credentials.secretName" . }} {{ $db.secretKeys.ownerPassword }}
{{- end -}}
{{- end -}}

{{/* Checks that hold for every rendering. */}}
{{- define "bo.validate" -}}
{{- $db := .Values.database -}}
{{- if eq $db.sslmode "disable" -}}
{{- if not $db.allowPlaintext -}}
{{- fail "database.sslmode disable sends passwords and orders in clear text; set database.allowPlaintext=true to really do that" -}}
{{- end -}}
{{- if ne $db.mode "external" -}}
{{- fail "database.sslmode disable is only possible with database.mode external: the bundled and CloudNativePG servers accept TLS only" -}}
{{- end -}}
{{- end -}}
{{- if and (has $db.sslmode (list "verify-full" "verify-ca")) (eq (include "bo.db.caSource" .) "") -}}
{{- fail (printf "database.sslmode %s needs the server's CA: set database.external.caSecret.name" $db.sslmode) -}}
{{- end -}}
{{- if le (int .Values.checkout.terminationGracePeriodSeconds) 0 -}}
{{- fail "checkout.terminationGracePeriodSeconds must be positive" -}}
{{- end -}}
{{- if and .Values.backup.enabled (eq .Values.backup.destination.type "s3") (not .Values.backup.destination.s3.bucket) -}}
{{- fail "backup.destination.s3.bucket is required when backup.destination.type is s3" -}}
{{- end -}}
{{- if and .Values.restore.enabled (not .Values.backup.enabled) -}}
{{- fail "restore.enabled needs backup.enabled and its destination (where the backups are)" -}}
{{- end -}}
{{- end -}}

{{/* ------------------------------------------------ configuration files */}}

{{- define "bo.paths.config" -}}/etc/boutique-orders/config{{- end -}}
{{- define "bo.paths.secrets" -}}/etc/boutique-orders/secrets{{- end -}}

{{/* [database] of a config file: (dict "root" $ "user" "..." "waitTimeout" "60s") */}}
{{- define "bo.toml.database" -}}
{{- $db := .root.Values.database -}}
[database]
host = {{ include "bo.db.host" .root | toJson }}
port = {{ include "bo.db.port" .root }}
name = {{ $db.name | toJson }}
user = {{ .user | toJson }}
password_file = {{ printf "%s/password" (include "bo.paths.secrets" .root) | toJson }}
sslmode = {{ $db.sslmode | toJson }}
{{- if and (ne $db.sslmode "disable") (include "bo.db.caSource" .root) }}
sslrootcert = {{ printf "%s/ca.crt" (include "bo.paths.secrets" .root) | toJson }}
{{- end }}
connect_timeout = {{ $db.connectTimeout | toJson }}
statement_timeout = {{ $db.statementTimeout | toJson }}
pool_max_size = {{ int $db.poolMaxSize }}
wait_timeout = {{ .waitTimeout | toJson }}
{{- end -}}

{{- define "bo.toml.telemetry" -}}
{{- $t := .Values.telemetry -}}
[telemetry]
log_level = {{ $t.logLevel | toJson }}
log_format = {{ $t.logFormat | toJson }}
tracing_enabled = {{ $t.tracing.enabled }}
collector_addr = {{ $t.tracing.collectorAddr | toJson }}
{{- if $t.tracing.serviceName }}
service_name = {{ $t.tracing.serviceName | toJson }}
{{- end }}
{{- end -}}

{{- define "bo.toml.backup" -}}
{{- $b := .Values.backup -}}
{{- $d := $b.destination -}}
[backup]
{{- if eq $d.type "s3" }}
destination = {{ printf "s3://%s/%s" $d.s3.bucket ($d.s3.prefix | trimAll "/") | trimSuffix "/" | toJson }}
{{- with $d.s3.region }}
s3_region = {{ . | toJson }}
{{- end }}
{{- with $d.s3.endpoint }}
s3_endpoint = {{ . | toJson }}
{{- end }}
s3_allow_http = {{ $d.s3.allowHttp }}
{{- if $d.s3.existingSecret }}
s3_access_key_id_file = {{ printf "%s/s3-access-key-id" (include "bo.paths.secrets" .) | toJson }}
s3_secret_access_key_file = {{ printf "%s/s3-secret-access-key" (include "bo.paths.secrets" .) | toJson }}
{{- end }}
{{- else }}
destination = "file:///backups"
{{- end }}
retention_count = {{ int $b.retention.count }}
retention_age = {{ $b.retention.age | toJson }}
compression_level = {{ int $b.compressionLevel }}
stall_timeout = {{ $b.stallTimeout | toJson }}
{{- end -}}

{{- define "bo.config.checkout" -}}
{{- $c := .Values.checkout -}}
# checkout: logs in as the checkout role.
{{ include "bo.toml.database" (dict "root" . "user" .Values.database.roles.checkout "waitTimeout" .Values.database.waitTimeout) }}

{{ include "bo.toml.telemetry" . }}

[checkout]
port = {{ int $c.port }}
persistence = {{ $c.persistence | toJson }}
shutdown_grace = {{ $c.shutdownGrace | toJson }}
health_check_interval = {{ $c.healthCheckInterval | toJson }}
downstream_timeout = {{ $c.downstreamTimeout | toJson }}
cart_addr = {{ $c.downstream.cart | toJson }}
product_catalog_addr = {{ $c.downstream.productCatalog | toJson }}
currency_addr = {{ $c.downstream.currency | toJson }}
shipping_addr = {{ $c.downstream.shipping | toJson }}
payment_addr = {{ $c.downstream.payment | toJson }}
email_addr = {{ $c.downstream.email | toJson }}
{{- end -}}

{{- define "bo.config.migrator" -}}
# migrator: logs in as the schema owner, creates the application roles.
{{ include "bo.toml.database" (dict "root" . "user" .Values.database.ownerUser "waitTimeout" .Values.migrator.waitTimeout) }}

[roles]
checkout = {{ .Values.database.roles.checkout | toJson }}
checkout_password_file = {{ printf "%s/checkout-password" (include "bo.paths.secrets" .) | toJson }}
backup = {{ .Values.database.roles.backup | toJson }}
backup_password_file = {{ printf "%s/backup-password" (include "bo.paths.secrets" .) | toJson }}

[migrator]
lock_timeout = {{ .Values.migrator.lockTimeout | toJson }}

{{ include "bo.toml.telemetry" . }}
{{- end -}}

{{- define "bo.config.backup" -}}
# backup: logs in as the backup role (SELECT only).
{{ include "bo.toml.database" (dict "root" . "user" .Values.database.roles.backup "waitTimeout" .Values.database.waitTimeout) }}

{{ include "bo.toml.backup" . }}

{{ include "bo.toml.telemetry" . }}
{{- end -}}

{{- define "bo.config.restore" -}}
# restore: logs in as the schema owner (restores into the order tables).
{{ include "bo.toml.database" (dict "root" . "user" .Values.database.ownerUser "waitTimeout" .Values.database.waitTimeout) }}

{{ include "bo.toml.backup" . }}

{{ include "bo.toml.telemetry" . }}
{{- end -}}

{{/* ------------------------------------------------------ pod parts */}}

{{/* Volumes of a client pod: (dict "root" $ "file" "checkout.toml" "secrets" (list "password=name key" ...)) */}}
{{- define "bo.client.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap | default (printf "%s-config" (include "bo.fullname" .root)) }}
    items:
      - key: {{ .file }}
        path: {{ .file }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      {{- range .secrets }}
      {{- $parts := splitList " " . }}
      {{- $path := index $parts 0 }}
      {{- $name := index $parts 1 }}
      {{- $key := index $parts 2 }}
      - secret:
          name: {{ $name }}
          items:
            - key: {{ $key }}
              path: {{ $path }}
      {{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}

{{- define "bo.client.volumeMounts" -}}
- name: config
  mountPath: {{ include "bo.paths.config" . }}
  readOnly: true
- name: secrets
  mountPath: {{ include "bo.paths.secrets" . }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/* The secret files of a client logging in with the password at "name key". */}}
{{- define "bo.client.secretList" -}}
{{- $list := list (printf "password %s" .password) -}}
{{- $ca := include "bo.db.caSource" .root -}}
{{- if and $ca (ne .root.Values.database.sslmode "disable") -}}
{{- $list = append $list (printf "ca.crt %s" $ca) -}}
{{- end -}}
{{- range .extra -}}
{{- $list = append $list . -}}
{{- end -}}
{{- toJson $list -}}
{{- end -}}

{{- define "bo.s3.secretList" -}}
{{- $s3 := .Values.backup.destination.s3 -}}
{{- if and (eq .Values.backup.destination.type "s3") $s3.existingSecret -}}
{{- toJson (list (printf "s3-access-key-id %s %s" $s3.existingSecret $s3.accessKeyIdKey) (printf "s3-secret-access-key %s %s" $s3.existingSecret $s3.secretAccessKeyKey)) -}}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{/* Label that lets a pod reach PostgreSQL through the NetworkPolicy. */}}
{{- define "bo.dbClientComponents" -}}
{{- toJson (list "checkout" "migrator" "backup" "restore" "test") -}}
{{- end -}}

{{- define "bo.checkout.serviceAccountName" -}}
{{- .Values.checkout.serviceAccount.name | default .Values.checkout.serviceName -}}
{{- end -}}

{{/* The port of a host:port or URL address, or the default given. */}}
{{- define "bo.portOf" -}}
{{- $port := regexFind "[0-9]+$" (.addr | trimSuffix "/") -}}
{{- $port | default .default -}}
{{- end -}}
