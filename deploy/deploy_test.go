// Package deploy_test checks the Helm chart: it renders with helm for its main value combinations,
// each rendering holds what that combination needs, and the manifests are accepted by a real
// Kubernetes API server.
package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/spool-run/spool/internal/k8stest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	k8stest.StopShared()
	os.Exit(code)
}

// render runs helm template on the chart with the values and returns its objects.
func render(t *testing.T, ns string, args ...string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	helm := filepath.Join(os.Getenv(k8stest.EnvBin), "helm")
	cmd := exec.Command(helm, append([]string{"template", "spool", "helm/spool", "--namespace", ns}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.New(stderr.String())
	}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	var objs []*unstructured.Unstructured
	for {
		var o unstructured.Unstructured
		if err := dec.Decode(&o.Object); err != nil {
			if err == io.EOF {
				return objs, nil
			}
			require.NoError(t, err)
		}
		if len(o.Object) > 0 {
			objs = append(objs, &o)
		}
	}
}

// checkConfig has Spool check the spool.yaml the chart made (spool serve --check-config).
func checkConfig(t *testing.T, conf string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "spool.yaml")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	bin := filepath.Join(dir, "spool")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/spool").CombinedOutput()
	require.NoError(t, err, "%s", out)
	cmd := exec.Command(bin, "serve", "--check-config", "--config", path, "--data", filepath.Join(dir, "data"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "spool refuses the chart's config:\n%s\n%s", out, conf)
	require.Contains(t, string(out), "config OK")
}

func byKind(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	m := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		m[o.GetKind()] = o
	}
	return m
}

func nested[T any](t *testing.T, o *unstructured.Unstructured, path ...string) T {
	t.Helper()
	v, ok, err := unstructured.NestedFieldNoCopy(o.Object, path...)
	require.NoError(t, err)
	require.True(t, ok, "%s has no %v", o.GetKind(), path)
	tv, ok := v.(T)
	require.True(t, ok, "%s %v is a %T", o.GetKind(), path, v)
	return tv
}

// TestChart renders the chart's main combinations, checks each, and applies it to a real API
// server, which validates every object against its schema.
func TestChart(t *testing.T) {
	c := k8stest.Shared(t) // skips without the binaries, helm among them
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(discovery.NewDiscoveryClientForConfigOrDie(c.Config)))
	dyn, err := dynamic.NewForConfig(c.Config)
	require.NoError(t, err)

	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, k map[string]*unstructured.Unstructured, ns string)
	}{
		{"sqlite", nil, func(t *testing.T, k map[string]*unstructured.Unstructured, ns string) {
			d := k["Deployment"]
			require.EqualValues(t, 1, nested[float64](t, d, "spec", "replicas"))
			require.Equal(t, "Recreate", nested[string](t, d, "spec", "strategy", "type"), "one writer on the volume")
			require.Contains(t, k, "PersistentVolumeClaim")
			ctr := nested[[]any](t, d, "spec", "template", "spec", "containers")[0].(map[string]any)
			require.Equal(t, "/readyz", ctr["readinessProbe"].(map[string]any)["httpGet"].(map[string]any)["path"])
			require.Equal(t, "/healthz", ctr["livenessProbe"].(map[string]any)["httpGet"].(map[string]any)["path"])
			require.Equal(t, "/healthz", ctr["startupProbe"].(map[string]any)["httpGet"].(map[string]any)["path"])
			require.Equal(t, "RuntimeDefault", nested[string](t, d, "spec", "template", "spec", "securityContext", "seccompProfile", "type"))
			require.EqualValues(t, 1, nested[float64](t, k["PodDisruptionBudget"], "spec", "maxUnavailable"),
				"one replica may go, or drains would wait forever")
			role := k["Role"]
			for _, r := range nested[[]any](t, role, "rules") {
				for _, res := range r.(map[string]any)["resources"].([]any) {
					require.Equal(t, "pods", res, "the Role allows pods and nothing else")
				}
			}
			require.NotContains(t, k, "ClusterRole")
			conf := nested[string](t, k["ConfigMap"], "data", "spool.yaml")
			require.Contains(t, conf, "namespace: "+ns, "image workers run as pods in the release's namespace")
			require.Contains(t, conf, "serverURL: http://spool."+ns+".svc:8080")
			checkConfig(t, conf)
		}},
		{"postgres", []string{"--set", "replicaCount=3", "--set", "store.postgres.existingSecret=spool-db",
			"--set", "secretKey.existingSecret=spool-keys", "--set", "adminKey.existingSecret=spool-keys",
			"--set", "config.workers.takeWait=20s"}, func(t *testing.T, k map[string]*unstructured.Unstructured, ns string) {
			d := k["Deployment"]
			require.EqualValues(t, 3, nested[float64](t, d, "spec", "replicas"))
			require.NotContains(t, k, "PersistentVolumeClaim")
			ctr := nested[[]any](t, d, "spec", "template", "spec", "containers")[0].(map[string]any)
			env := map[string]string{}
			for _, e := range ctr["env"].([]any) {
				e := e.(map[string]any)
				if from, ok := e["valueFrom"].(map[string]any); ok {
					env[e["name"].(string)] = from["secretKeyRef"].(map[string]any)["name"].(string)
				}
			}
			require.Equal(t, map[string]string{"SPOOL_STORE": "spool-db", "SPOOL_SECRET_KEY": "spool-keys", "SPOOL_ADMIN_KEY": "spool-keys"}, env,
				"every secret comes from a Secret, none is in the manifests")
			require.Contains(t, nested[string](t, k["ConfigMap"], "data", "spool.yaml"), "takeWait: 20s")
			checkConfig(t, nested[string](t, k["ConfigMap"], "data", "spool.yaml"))
			require.EqualValues(t, 1, nested[float64](t, k["PodDisruptionBudget"], "spec", "minAvailable"))
		}},
		{"no pods, no rbac, no pdb", []string{"--set", "workers.pods=false", "--set", "rbac.create=false",
			"--set", "podDisruptionBudget.enabled=false", "--set", "serviceAccount.create=false"}, func(t *testing.T, k map[string]*unstructured.Unstructured, ns string) {
			require.NotContains(t, nested[string](t, k["ConfigMap"], "data", "spool.yaml"), "kubernetes")
			require.NotContains(t, k, "Role")
			require.NotContains(t, k, "PodDisruptionBudget")
			require.NotContains(t, k, "ServiceAccount")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := c.Namespace(t)
			objs, err := render(t, ns, tc.args...)
			require.NoError(t, err)
			tc.check(t, byKind(objs), ns)
			for _, o := range objs {
				m, err := mapper.RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version)
				require.NoError(t, err, o.GetKind())
				var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
				if m.Scope.Name() == meta.RESTScopeNameNamespace {
					ri = dyn.Resource(m.Resource).Namespace(ns)
				}
				_, err = ri.Create(t.Context(), o, metav1.CreateOptions{FieldValidation: "Strict"})
				require.NoError(t, err, "%s %s", o.GetKind(), o.GetName())
			}
		})
	}

	// Combinations that cannot work are refused at render time, saying why.
	ns := c.Namespace(t)
	_, err = render(t, ns, "--set", "replicaCount=2")
	require.ErrorContains(t, err, "replicaCount > 1 needs PostgreSQL")
	_, err = render(t, ns, "--set", "store.postgres.existingSecret=db")
	require.ErrorContains(t, err, "every replica needs the same secret key")
}
