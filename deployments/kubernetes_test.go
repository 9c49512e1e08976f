package deployments_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	kustomize "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const k8sDir = "kubernetes"

// k8sObjects are the objects `kubectl apply -k deployments/kubernetes` would apply.
type k8sObjects struct {
	namespace  corev1.Namespace
	secret     corev1.Secret
	deployment appsv1.Deployment
	service    corev1.Service
	pdb        policyv1.PodDisruptionBudget
}

// readK8s builds the kustomization as kubectl would (kustomize's krusty, from the files on
// disk) and decodes every object it yields into its Kubernetes API type strictly: a field
// the type does not have, or one given twice, fails.
func readK8s(t *testing.T) k8sObjects {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kz kustomize.Kustomization
	if err := yaml.UnmarshalStrict(b, &kz); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if kz.Kind != kustomize.KustomizationKind || kz.APIVersion != kustomize.KustomizationVersion {
		t.Errorf("kustomization.yaml is %s %s, want %s %s", kz.APIVersion, kz.Kind, kustomize.KustomizationVersion, kustomize.KustomizationKind)
	}
	if errs := kz.EnforceFields(); len(errs) > 0 {
		t.Errorf("kustomization.yaml: %v", errs)
	}

	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), k8sDir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", k8sDir, err)
	}
	var objs k8sObjects
	seen := map[string]int{}
	for _, r := range resources.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		kind := r.GetKind()
		var into any
		switch kind {
		case "Namespace":
			into = &objs.namespace
		case "Secret":
			into = &objs.secret
		case "Deployment":
			into = &objs.deployment
		case "Service":
			into = &objs.service
		case "PodDisruptionBudget":
			into = &objs.pdb
		default:
			t.Errorf("kustomize build yields a %s the tests do not check", kind)
			continue
		}
		seen[kind]++
		if err := yaml.UnmarshalStrict(y, into); err != nil {
			t.Errorf("%s %s: %v", kind, r.GetName(), err)
		}
	}
	for _, kind := range []string{"Namespace", "Secret", "Deployment", "Service", "PodDisruptionBudget"} {
		if seen[kind] != 1 {
			t.Fatalf("kustomize build yields %d of kind %s, want 1", seen[kind], kind)
		}
	}
	return objs
}

func TestKubernetesManifestsAgreeWithKeysd(t *testing.T) {
	k := keysdHelp(t)
	d := readDockerfile(t)
	httpPort := portOf(t, "Dockerfile --http-addr", k.checkArgs(t, "Dockerfile ENTRYPOINT", d.entrypoint[1:])["http-addr"])
	o := readK8s(t)
	dep := o.deployment
	ns := o.namespace.Name
	for what, got := range map[string]string{"Secret": o.secret.Namespace, "Deployment": dep.Namespace, "Service": o.service.Namespace, "PodDisruptionBudget": o.pdb.Namespace} {
		if got != ns {
			t.Errorf("%s is in namespace %q, not %q", what, got, ns)
		}
	}

	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("Deployment: want 2 or more replicas, got %v", dep.Spec.Replicas)
	}
	if ru := dep.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("Deployment: want a rolling update with maxUnavailable 0")
	}
	podLabels := dep.Spec.Template.Labels
	if !selects(dep.Spec.Selector.MatchLabels, podLabels) || !selects(o.service.Spec.Selector, podLabels) ||
		o.pdb.Spec.Selector == nil || !selects(o.pdb.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("the Deployment's, Service's and PodDisruptionBudget's selectors must all select the pods %v", podLabels)
	}
	if o.pdb.Spec.MinAvailable == nil || o.pdb.Spec.MinAvailable.IntValue() < 1 {
		t.Errorf("PodDisruptionBudget: want minAvailable 1 or more")
	}

	pod := dep.Spec.Template.Spec
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("pod: want runAsNonRoot")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("pod: want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Image != "keyledger/keysd:latest" {
		t.Errorf("container image %s: want the image deployments/Dockerfile builds (keyledger/keysd, tag from kustomization.yaml)", c.Image)
	}
	if len(c.Command) != 0 {
		t.Errorf("container: command %v replaces the image's entrypoint (and its --http-addr)", c.Command)
	}
	flags := k.checkArgs(t, "container args", c.Args)
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("container: want a read-only root, no privilege escalation, non-root")
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("container: want a memory limit and a CPU request, got %v", c.Resources)
	}

	// Ports and probes: keysd's real paths, on the port its entrypoint listens on.
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != int32(httpPort) {
		t.Fatalf("container ports %+v: want %d (the entrypoint's --http-addr)", c.Ports, httpPort)
	}
	portName := c.Ports[0].Name
	probe := func(what string, p *corev1.Probe, path string) {
		t.Helper()
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: want an HTTP probe of %s", what, path)
			return
		}
		if p.HTTPGet.Path != path || !samePort(p.HTTPGet.Port, portName, httpPort) {
			t.Errorf("%s: probes %s on %s, want %s on %d", what, p.HTTPGet.Path, p.HTTPGet.Port.String(), path, httpPort)
		}
	}
	probe("livenessProbe", c.LivenessProbe, "/healthz")
	probe("readinessProbe", c.ReadinessProbe, "/readyz")
	probe("startupProbe", c.StartupProbe, "/healthz")
	if len(o.service.Spec.Ports) != 1 || !samePort(o.service.Spec.Ports[0].TargetPort, portName, httpPort) {
		t.Errorf("Service ports %+v: want targetPort %s", o.service.Spec.Ports, portName)
	}
	if port := dep.Spec.Template.Annotations["prometheus.io/port"]; port != "" && port != fmt.Sprint(httpPort) {
		t.Errorf("prometheus.io/port %s, keysd serves /metrics on %d", port, httpPort)
	}

	// Environment: every variable is keysd's; the secret ones come from the Secret.
	env := map[string]string{}
	var names []string
	for _, e := range c.Env {
		names = append(names, e.Name)
		env[e.Name] = e.Value
		if e.ValueFrom != nil {
			ref := e.ValueFrom.SecretKeyRef
			if ref == nil || ref.Name != o.secret.Name {
				t.Errorf("env %s: want it from Secret %s", e.Name, o.secret.Name)
				continue
			}
			v, ok := o.secret.StringData[ref.Key]
			if !ok {
				t.Errorf("env %s: Secret %s has no key %s", e.Name, o.secret.Name, ref.Key)
			}
			env[e.Name] = v
		}
	}
	k.checkEnv(t, "container env", names)
	checkKeysdAccepts(t, "container", append(slices.Clone(d.entrypoint[1:]), c.Args...), env)
	if flags["stream-replicas"] != "3" && env["KEYS_STREAM_REPLICAS"] != "3" {
		t.Errorf("container: want --stream-replicas 3")
	}
	if !slices.Contains(names, "KEYS_DATABASE_URL") {
		t.Errorf("container: want KEYS_DATABASE_URL (from the Secret)")
	}

	// KEYS_NATS_URL: every pod of the NATS chart's StatefulSet (nats-values.yaml).
	replicas := natsValues(t).Config.Cluster.Replicas
	var want []string
	for i := range replicas {
		want = append(want, fmt.Sprintf("nats-%d.nats-headless:4222", i))
	}
	if got := natsURLs(t, "KEYS_NATS_URL", env["KEYS_NATS_URL"]); !slices.Equal(got, want) {
		t.Errorf("KEYS_NATS_URL lists %v, want the chart's pods %v", got, want)
	}

	// KEYS_SECRET_FILE: the Secret's "secret" key, mounted read-only.
	secretFile := env["KEYS_SECRET_FILE"]
	found := false
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, secretFile)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != o.secret.Name {
				continue
			}
			for _, item := range v.Secret.Items {
				if item.Path == rel && item.Key == "secret" && m.ReadOnly {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("KEYS_SECRET_FILE %s is not the Secret's key \"secret\" mounted read-only", secretFile)
	}
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func samePort(p intstr.IntOrString, name string, number int) bool {
	if p.Type == intstr.String {
		return p.StrVal == name
	}
	return p.IntValue() == number
}
