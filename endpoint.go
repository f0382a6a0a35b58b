package spool

import (
	"regexp"
	"strings"
	"time"
)

// ScalerType is how an endpoint's autoscaler counts the workers it wants.
type ScalerType string

const (
	// ScalerQueueDelay adds a worker when the oldest normal-priority job has waited more than
	// scalerValue seconds.
	ScalerQueueDelay ScalerType = "QUEUE_DELAY"
	// ScalerRequestCount wants ceil((queued + in progress) / scalerValue) workers.
	ScalerRequestCount ScalerType = "REQUEST_COUNT"
)

// Valid reports whether t is one of the scaler types.
func (t ScalerType) Valid() bool { return t == ScalerQueueDelay || t == ScalerRequestCount }

// Endpoint is a named queue plus how its workers run. The same field names are used in the config
// file (YAML) and in the JSON of /api/endpoints.
type Endpoint struct {
	Name string `json:"name" yaml:"name"`
	// WorkersMin is the number of always-on workers. Defaults to 0.
	WorkersMin int `json:"workersMin" yaml:"workersMin"`
	// WorkersMax caps the number of workers. Defaults to 3.
	WorkersMax int `json:"workersMax" yaml:"workersMax"`
	// IdleTimeout is the seconds a worker may sit idle before it is stopped. Defaults to 5.
	IdleTimeout int `json:"idleTimeout" yaml:"idleTimeout"`
	// ScalerType is QUEUE_DELAY or REQUEST_COUNT. Defaults to QUEUE_DELAY.
	ScalerType ScalerType `json:"scalerType" yaml:"scalerType"`
	// ScalerValue is seconds of queue delay or requests per worker. Defaults to 4.
	ScalerValue int `json:"scalerValue" yaml:"scalerValue"`
	// ExecutionTimeoutMs is the default policy.executionTimeout. Defaults to 600000 (10 min).
	ExecutionTimeoutMs int64 `json:"executionTimeoutMs" yaml:"executionTimeoutMs"`
	// TTLMs is the default policy.ttl. Defaults to 86400000 (24 h).
	TTLMs int64 `json:"ttlMs" yaml:"ttlMs"`
	// GPUCount is the number of GPUs handed to each worker. Defaults to 0.
	GPUCount int `json:"gpuCount" yaml:"gpuCount"`
	// MaxQueue caps the jobs waiting in the queue; a submission beyond it gets 429. 0, the
	// default, means no cap.
	MaxQueue int `json:"maxQueue" yaml:"maxQueue"`
	// OutputOffloadBytes, when positive, lets workers built with Spool's Go SDK store a result
	// larger than this many bytes (its JSON) in the job's s3Config bucket and post
	// {"outputUrl": ...} instead, rather than running into the result size limit. Only jobs with an
	// s3Config are offloaded. 0, the default, turns it off.
	OutputOffloadBytes int64 `json:"outputOffloadBytes" yaml:"outputOffloadBytes"`
	// WebhookSecret, when set, signs every webhook attempt with Standard Webhooks headers: one or
	// more secrets ("whsec_" + base64 of 24-64 bytes) separated by spaces, each giving one
	// signature (rotation). It is stored but never shown: /api answers hasWebhookSecret instead.
	WebhookSecret string `json:"webhookSecret,omitempty" yaml:"webhookSecret,omitempty"`
	// WebhookAttempts is the most attempts of one webhook delivery. Defaults to 3 (RunPod).
	WebhookAttempts int `json:"webhookAttempts" yaml:"webhookAttempts"`
	// WebhookBackoff is "fixed" (wait webhookDelayMs between attempts) or "exponential" (double
	// it after every attempt, up to webhookMaxDelayMs, with jitter). Defaults to fixed.
	WebhookBackoff string `json:"webhookBackoff" yaml:"webhookBackoff"`
	// WebhookDelayMs is the wait after a failed attempt. Defaults to 10000 (RunPod).
	WebhookDelayMs int64 `json:"webhookDelayMs" yaml:"webhookDelayMs"`
	// WebhookMaxDelayMs caps exponential backoff. Defaults to 3600000 (1 h).
	WebhookMaxDelayMs int64 `json:"webhookMaxDelayMs" yaml:"webhookMaxDelayMs"`
	// WebhookTimeoutMs bounds one attempt. Defaults to 10000 (RunPod).
	WebhookTimeoutMs int64 `json:"webhookTimeoutMs" yaml:"webhookTimeoutMs"`
	// Worker says how the local process provider starts a worker; nil means workers are started
	// outside Spool and connect on their own.
	Worker *WorkerSpec `json:"worker,omitempty" yaml:"worker,omitempty"`
	// Source is "config" for endpoints from the config file and "api" for those made through
	// /api/endpoints. It is informational: both kinds behave the same.
	Source string `json:"source,omitempty" yaml:"-"`
	// CreatedAt and UpdatedAt are set by the engine when the endpoint is stored.
	CreatedAt time.Time `json:"createdAt" yaml:"-"`
	UpdatedAt time.Time `json:"updatedAt" yaml:"-"`
}

// WorkerSpec is how Spool starts an endpoint's workers: a local command (the process provider),
// or a container image (the docker provider), exactly one of the two.
type WorkerSpec struct {
	// Command is a program: a name looked up in PATH, or a path relative to Dir.
	Command string `json:"command,omitempty" yaml:"command,omitempty"`
	// Args are the command's arguments, or the image's command (its CMD) when set.
	Args []string          `json:"args,omitempty" yaml:"args,omitempty"`
	Env  map[string]string `json:"env,omitempty" yaml:"env,omitempty"`
	// Dir is the command's folder (each worker runs in a folder of its own inside it), or the
	// container's working directory.
	Dir string `json:"dir,omitempty" yaml:"dir,omitempty"`
	// Image is a container image, as docker pull names it ("ghcr.io/me/worker:1.2").
	Image string `json:"image,omitempty" yaml:"image,omitempty"`
	// Pull says when the image is pulled: "missing" (the default), "always" or "never".
	Pull string `json:"pull,omitempty" yaml:"pull,omitempty"`
	// Mounts are host folders or files bound into the container.
	Mounts []Mount `json:"mounts,omitempty" yaml:"mounts,omitempty"`
	// RegistryAuth is how a private image is pulled.
	RegistryAuth *RegistryAuth `json:"registryAuth,omitempty" yaml:"registryAuth,omitempty"`
	// Kubernetes is what an image worker's pod gets besides its image when Spool runs workers as
	// pods (workers.kubernetes); the other providers ignore it.
	Kubernetes *PodSettings `json:"kubernetes,omitempty" yaml:"kubernetes,omitempty"`
}

// PodSettings place and size a worker's pod. Resources are Kubernetes quantities ("2", "500m",
// "8Gi"); the endpoint's gpuCount becomes the nvidia.com/gpu limit unless Limits names it.
type PodSettings struct {
	NodeSelector     map[string]string `json:"nodeSelector,omitempty" yaml:"nodeSelector,omitempty"`
	Tolerations      []Toleration      `json:"tolerations,omitempty" yaml:"tolerations,omitempty"`
	Requests         map[string]string `json:"requests,omitempty" yaml:"requests,omitempty"`
	Limits           map[string]string `json:"limits,omitempty" yaml:"limits,omitempty"`
	ServiceAccount   string            `json:"serviceAccount,omitempty" yaml:"serviceAccount,omitempty"`
	ImagePullSecrets []string          `json:"imagePullSecrets,omitempty" yaml:"imagePullSecrets,omitempty"`
	Volumes          []PodVolume       `json:"volumes,omitempty" yaml:"volumes,omitempty"`
}

// Toleration lets a worker's pod onto tainted nodes (a GPU pool), as in a PodSpec.
type Toleration struct {
	Key      string `json:"key,omitempty" yaml:"key,omitempty"`
	Operator string `json:"operator,omitempty" yaml:"operator,omitempty"` // Equal (the default) or Exists
	Value    string `json:"value,omitempty" yaml:"value,omitempty"`
	Effect   string `json:"effect,omitempty" yaml:"effect,omitempty"` // NoSchedule, PreferNoSchedule, NoExecute
}

// PodVolume mounts one volume into a worker's pod at MountPath: a claim, a Secret, a ConfigMap or
// an empty folder, exactly one.
type PodVolume struct {
	Name                  string `json:"name" yaml:"name"`
	MountPath             string `json:"mountPath" yaml:"mountPath"`
	ReadOnly              bool   `json:"readOnly,omitempty" yaml:"readOnly,omitempty"`
	PersistentVolumeClaim string `json:"persistentVolumeClaim,omitempty" yaml:"persistentVolumeClaim,omitempty"`
	Secret                string `json:"secret,omitempty" yaml:"secret,omitempty"`
	ConfigMap             string `json:"configMap,omitempty" yaml:"configMap,omitempty"`
	EmptyDir              bool   `json:"emptyDir,omitempty" yaml:"emptyDir,omitempty"`
}

// Mount binds a path of the host into a worker's container.
type Mount struct {
	Source   string `json:"source" yaml:"source"`
	Target   string `json:"target" yaml:"target"`
	ReadOnly bool   `json:"readOnly,omitempty" yaml:"readOnly,omitempty"`
}

// RegistryAuth names the credentials of a private registry. The password stays in a file on
// Spool's host, read at each pull, so that no secret is stored with the endpoint or shown by it.
type RegistryAuth struct {
	Username string `json:"username" yaml:"username"`
	// PasswordFile holds the password or token (an absolute path on Spool's host).
	PasswordFile string `json:"passwordFile" yaml:"passwordFile"`
	// ServerAddress is the registry, e.g. ghcr.io; by default the image's.
	ServerAddress string `json:"serverAddress,omitempty" yaml:"serverAddress,omitempty"`
}

// Pull policies of a worker image.
const (
	PullMissing = "missing"
	PullAlways  = "always"
	PullNever   = "never"
)

// validate checks a worker spec and names the first bad setting.
func (w *WorkerSpec) validate() error {
	switch {
	case w.Command == "" && w.Image == "":
		return Errorf(CodeInvalid, "worker.command or worker.image is required when worker is set")
	case w.Command != "" && w.Image != "":
		return Errorf(CodeInvalid, "worker.command and worker.image exclude each other: a worker is a process or a container")
	case w.Image == "" && (w.Pull != "" || len(w.Mounts) > 0 || w.RegistryAuth != nil || w.Kubernetes != nil):
		return Errorf(CodeInvalid, "worker.pull, worker.mounts, worker.registryAuth and worker.kubernetes apply to worker.image only")
	case w.Pull != "" && w.Pull != PullMissing && w.Pull != PullAlways && w.Pull != PullNever:
		return Errorf(CodeInvalid, "worker.pull must be missing, always or never")
	case w.Image != "" && w.Dir != "" && !strings.HasPrefix(w.Dir, "/"):
		return Errorf(CodeInvalid, "worker.dir of an image is a path in the container and must be absolute")
	}
	for i, m := range w.Mounts {
		if !strings.HasPrefix(m.Source, "/") || !strings.HasPrefix(m.Target, "/") {
			return Errorf(CodeInvalid, "worker.mounts[%d]: source and target must be absolute paths", i)
		}
	}
	if a := w.RegistryAuth; a != nil && (a.Username == "" || !strings.HasPrefix(a.PasswordFile, "/")) {
		return Errorf(CodeInvalid, "worker.registryAuth needs a username and an absolute passwordFile")
	}
	if k := w.Kubernetes; k != nil {
		for i, t := range k.Tolerations {
			if t.Operator != "" && t.Operator != "Equal" && t.Operator != "Exists" {
				return Errorf(CodeInvalid, "worker.kubernetes.tolerations[%d].operator must be Equal or Exists", i)
			}
		}
		for i, v := range k.Volumes {
			sources := 0
			for _, set := range []bool{v.PersistentVolumeClaim != "", v.Secret != "", v.ConfigMap != "", v.EmptyDir} {
				if set {
					sources++
				}
			}
			switch {
			case v.Name == "" || !strings.HasPrefix(v.MountPath, "/"):
				return Errorf(CodeInvalid, "worker.kubernetes.volumes[%d] needs a name and an absolute mountPath", i)
			case sources != 1:
				return Errorf(CodeInvalid, "worker.kubernetes.volumes[%d] needs exactly one of persistentVolumeClaim, secret, configMap and emptyDir", i)
			}
		}
	}
	return nil
}

// NewEndpoint returns an endpoint with every default filled in. Decoders unmarshal over it, so an
// omitted field keeps its default while an explicit 0 stays 0.
func NewEndpoint(name string) Endpoint {
	return Endpoint{
		Name:               name,
		WorkersMax:         3,
		IdleTimeout:        5,
		ScalerType:         ScalerQueueDelay,
		ScalerValue:        4,
		ExecutionTimeoutMs: DefaultExecutionTimeoutMs,
		TTLMs:              DefaultTTLMs,
		WebhookAttempts:    DefaultWebhookAttempts,
		WebhookBackoff:     WebhookBackoffFixed,
		WebhookDelayMs:     DefaultWebhookDelayMs,
		WebhookMaxDelayMs:  DefaultWebhookMaxDelayMs,
		WebhookTimeoutMs:   DefaultWebhookTimeoutMs,
	}
}

// MaxWorkers bounds workersMax: far above what one machine or a cluster runs for one endpoint,
// low enough that the autoscaler's arithmetic and per-worker bookkeeping never overflow or
// allocate for an absurd count.
const MaxWorkers = 10000

var endpointName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidEndpointName reports whether name can be an endpoint name: it appears in URLs, so only
// letters, digits, '-' and '_' (at most 64, starting with a letter or digit).
func ValidEndpointName(name string) bool { return endpointName.MatchString(name) }

// Validate checks every setting and names the first bad one.
func (e *Endpoint) Validate() error {
	switch {
	case !ValidEndpointName(e.Name):
		return Errorf(CodeInvalid, "name must be 1-64 letters, digits, '-' or '_', starting with a letter or digit")
	case e.WorkersMin < 0:
		return Errorf(CodeInvalid, "workersMin must be at least 0")
	case e.WorkersMax < 0:
		return Errorf(CodeInvalid, "workersMax must be at least 0")
	case e.WorkersMax > MaxWorkers:
		return Errorf(CodeInvalid, "workersMax must be at most %d", MaxWorkers)
	case e.WorkersMin > e.WorkersMax:
		return Errorf(CodeInvalid, "workersMin (%d) must not exceed workersMax (%d)", e.WorkersMin, e.WorkersMax)
	case e.IdleTimeout < 1 || e.IdleTimeout > 3600:
		return Errorf(CodeInvalid, "idleTimeout must be between 1 and 3600 seconds")
	case !e.ScalerType.Valid():
		return Errorf(CodeInvalid, "scalerType must be %s or %s", ScalerQueueDelay, ScalerRequestCount)
	case e.ScalerValue < 1:
		return Errorf(CodeInvalid, "scalerValue must be at least 1")
	case e.GPUCount < 0:
		return Errorf(CodeInvalid, "gpuCount must be at least 0")
	case e.MaxQueue < 0:
		return Errorf(CodeInvalid, "maxQueue must be at least 0")
	case e.OutputOffloadBytes < 0:
		return Errorf(CodeInvalid, "outputOffloadBytes must be at least 0 (0 turns offload off)")
	}
	if e.Worker != nil {
		if err := e.Worker.validate(); err != nil {
			return err
		}
	}
	if err := ValidateExecutionTimeout("executionTimeoutMs", e.ExecutionTimeoutMs); err != nil {
		return err
	}
	if err := e.validateWebhook(); err != nil {
		return err
	}
	return ValidateTTL("ttlMs", e.TTLMs)
}
