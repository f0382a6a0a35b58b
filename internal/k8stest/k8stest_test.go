package k8stest_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spool-run/spool/internal/k8stest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	k8stest.StopShared()
	os.Exit(code)
}

// TestCluster: the API server takes a pod, its status (written as a kubelet would), a list and a
// delete.
func TestCluster(t *testing.T) {
	c := k8stest.Shared(t)
	ns := c.Namespace(t)
	ctx := t.Context()
	pods := c.Client.CoreV1().Pods(ns)
	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "w1", Labels: map[string]string{"app": "x"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: "example/worker:1"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	pod.Status.Phase = corev1.PodRunning
	_, err = pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	require.NoError(t, err)
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=x"})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	require.Equal(t, corev1.PodRunning, list.Items[0].Status.Phase)
	require.NoError(t, pods.Delete(ctx, "w1", metav1.DeleteOptions{}))
}
