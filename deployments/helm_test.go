package deployments_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// chartValues are the values of the official NATS Helm chart (nats-io/k8s, chart "nats",
// version 2.14.2: helm/charts/nats/values.yaml) that nats-values.yaml may set. Decoding it
// strictly into this type fails on any other key, so a misspelt key (which Helm would
// silently ignore) fails here.
type chartValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool `json:"enabled"`
			Replicas int  `json:"replicas"`
		} `json:"cluster"`
		JetStream struct {
			Enabled   bool `json:"enabled"`
			FileStore struct {
				Enabled bool   `json:"enabled"`
				Dir     string `json:"dir"`
				MaxSize string `json:"maxSize"`
				PVC     struct {
					Enabled          bool   `json:"enabled"`
					Size             string `json:"size"`
					StorageClassName string `json:"storageClassName"`
				} `json:"pvc"`
			} `json:"fileStore"`
			MemoryStore struct {
				Enabled bool   `json:"enabled"`
				MaxSize string `json:"maxSize"`
			} `json:"memoryStore"`
			// Merged into nats.conf's jetstream block; "<< x >>" is written unquoted.
			Merge map[string]string `json:"merge"`
		} `json:"jetstream"`
	} `json:"config"`
	Container struct {
		Env       map[string]string           `json:"env"`
		Resources corev1.ResourceRequirements `json:"resources"`
	} `json:"container"`
	PodDisruptionBudget struct {
		Enabled bool `json:"enabled"`
	} `json:"podDisruptionBudget"`
	PodTemplate struct {
		// Keyed by topologyKey; the chart adds it and the label selector.
		TopologySpreadConstraints map[string]corev1.TopologySpreadConstraint `json:"topologySpreadConstraints"`
	} `json:"podTemplate"`
}

func natsValues(t *testing.T) chartValues {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k8sDir, "nats-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v chartValues
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatalf("nats-values.yaml: %v", err)
	}
	return v
}

func TestNATSHelmValues(t *testing.T) {
	v := natsValues(t)
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas != 3 {
		t.Errorf("want config.cluster.enabled and replicas 3, got %v and %d", c.Cluster.Enabled, c.Cluster.Replicas)
	}
	if !c.JetStream.Enabled || !c.JetStream.FileStore.Enabled || !c.JetStream.FileStore.PVC.Enabled || c.JetStream.MemoryStore.Enabled {
		t.Errorf("want JetStream with file storage on a persistent volume, and no memory storage")
	}
	if !v.PodDisruptionBudget.Enabled {
		t.Errorf("want the chart's PodDisruptionBudget")
	}
	if v.Container.Resources.Limits.Memory().IsZero() {
		t.Errorf("want a memory limit for nats-server")
	}

	// The merge block as the chart renders it into nats.conf, parsed by the pinned
	// nats-server: a key nats-server does not know, or a bad value, fails.
	keys := make([]string, 0, len(c.JetStream.Merge))
	for k := range c.JetStream.Merge {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var conf strings.Builder
	fmt.Fprintf(&conf, "jetstream {\n  store_dir: %q\n", t.TempDir())
	for _, k := range keys {
		val := c.JetStream.Merge[k]
		if strings.HasPrefix(val, "<<") && strings.HasSuffix(val, ">>") {
			val = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(val, "<<"), ">>"))
		} else {
			val = fmt.Sprintf("%q", val)
		}
		fmt.Fprintf(&conf, "  %s: %s\n", k, val)
	}
	conf.WriteString("}\n")
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("config.jetstream.merge as nats.conf:\n%s%v", conf.String(), err)
	}
	if !opts.JetStream || (opts.SyncInterval <= 0 && !opts.SyncAlways) {
		t.Errorf("config.jetstream.merge: want sync_interval set, got %v", opts.SyncInterval)
	}
}
