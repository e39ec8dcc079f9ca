package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/sluice-shuffle/sluice/manager/metrics"
)

// The deployment files in deploy/ are checked against the binary itself:
// every sluice command line they hold is parsed and validated by the real
// command (with --print-config), and the ports, probes and scrape
// annotations around it must match what that command listens on.

const deployDir = "../../deploy"

// effectiveConfig runs `sluice <args> --print-config` in-process with env
// set, and returns the effective settings.
func effectiveConfig(t *testing.T, args []string, env map[string]string) map[string]any {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	code, out, errOut := run(t, append(args, "--print-config")...)
	if code != 0 {
		t.Fatalf("sluice %q: exit %d: %s", args, code, errOut)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatalf("sluice %q --print-config: %v\n%s", args, err, out)
	}
	// Every SLUICE_* variable must name a key of the command: the
	// binary ignores unknown ones.
	prefix := map[string]string{"manager": managerEnvPrefix, "worker": workerEnvPrefix}[args[0]]
	for k := range env {
		if !strings.HasPrefix(k, "SLUICE_") {
			continue
		}
		key := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(k, prefix+"_"), "_", "-"))
		if _, ok := cfg[key]; !strings.HasPrefix(k, prefix+"_") || !ok {
			t.Errorf("environment variable %s is not a setting of sluice %s", k, args[0])
		}
	}
	return cfg
}

func portOf(t *testing.T, addr any) int {
	t.Helper()
	s, _ := addr.(string)
	_, p, err := net.SplitHostPort(s)
	if err != nil {
		t.Fatalf("address %q: %v", s, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port int    `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Replicas    int            `yaml:"replicas"`
		ServiceName string         `yaml:"serviceName"`
		Selector    map[string]any `yaml:"selector"`
		Ports       []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				Containers []k8sContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

var k8sVar = regexp.MustCompile(`\$\([A-Z_]+\)`)

// probeAnswer is what the HTTP mux both binaries serve their probes and
// metrics with (manager/metrics.Handler) answers to GET path, its Live
// check failing with "live" and its Ready check with "ready": a path it
// does not serve is a 404, and the body tells which check a probe runs.
func probeAnswer(path string) (int, string) {
	h := metrics.Handler(prometheus.NewRegistry(), metrics.Checks{
		Live:  func() error { return errors.New("live") },
		Ready: func() error { return errors.New("ready") },
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

func TestProbeAnswer(t *testing.T) {
	for path, want := range map[string]string{"/healthz": "503 live", "/readyz": "503 ready", "/health": "404 404 page not found"} {
		if code, body := probeAnswer(path); fmt.Sprint(code, " ", body) != want {
			t.Errorf("GET %s: %d %q, want %s", path, code, body, want)
		}
	}
	if code, _ := probeAnswer("/metrics"); code != 200 {
		t.Errorf("GET /metrics: %d", code)
	}
}

// etcdMembers returns the client endpoints of the etcd StatefulSet of the
// manifests (member i of StatefulSet s behind headless service v is
// s-i.v), or nil when there is none.
func etcdMembers(t *testing.T, objs []k8sObject) []string {
	for _, o := range objs {
		if o.Kind != "StatefulSet" || len(o.Spec.Template.Spec.Containers) == 0 {
			continue
		}
		c := o.Spec.Template.Spec.Containers[0]
		if !strings.Contains(c.Image, "etcd") {
			continue
		}
		port := 0
		for _, p := range c.Ports {
			if p.Name == "client" {
				port = p.ContainerPort
			}
		}
		if o.Spec.ServiceName == "" || o.Spec.Replicas == 0 || port == 0 {
			t.Fatalf("etcd StatefulSet %s: service %q, %d replicas, client port %d", o.Metadata.Name, o.Spec.ServiceName, o.Spec.Replicas, port)
		}
		var out []string
		for i := range o.Spec.Replicas {
			out = append(out, fmt.Sprintf("%s-%d.%s:%d", o.Metadata.Name, i, o.Spec.ServiceName, port))
		}
		return out
	}
	return nil
}

func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(deployDir, "kubernetes", "*.yaml"))
	if len(files) < 3 {
		t.Fatalf("kubernetes manifests: %v", files)
	}
	var objs []k8sObject
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "" {
				t.Fatalf("%s: a document without kind", f)
			}
			objs = append(objs, o)
		}
	}
	etcd := etcdMembers(t, objs)
	if etcd == nil {
		t.Fatal("no etcd StatefulSet in the manifests")
	}
	// Ports of the sluice containers, by app label and port name.
	podPorts := map[string]map[string]int{}
	checked := map[string]bool{}
	for _, o := range objs {
		for _, c := range o.Spec.Template.Spec.Containers {
			if !strings.HasPrefix(c.Image, "sluice") {
				continue
			}
			t.Run(o.Metadata.Name, func(t *testing.T) {
				args := make([]string, len(c.Args))
				for i, a := range c.Args {
					args[i] = k8sVar.ReplaceAllString(a, "10.1.2.3")
				}
				env := map[string]string{}
				for _, e := range c.Env {
					if e.Value != "" {
						env[e.Name] = e.Value
					}
				}
				cfg := effectiveConfig(t, args, env)
				checked[args[0]] = true
				listen, metrics := portOf(t, cfg["listen"]), portOf(t, cfg["metrics-listen"])
				ports := map[string]int{}
				for _, p := range c.Ports {
					ports[p.Name] = p.ContainerPort
				}
				podPorts[o.Spec.Template.Metadata.Labels["app"]] = ports
				main := map[string]string{"manager": "grpc", "worker": "data"}[args[0]]
				if ports[main] != listen {
					t.Errorf("container port %q is %d, the %s listens on %d", main, ports[main], args[0], listen)
				}
				if ports["metrics"] != metrics {
					t.Errorf("container port metrics is %d, the %s serves metrics on %d", ports["metrics"], args[0], metrics)
				}
				// Liveness must run the Live check (a failing Ready check, as
				// on a standby manager or a worker between managers, must not
				// get the container restarted), readiness the Ready check.
				for what, p := range map[string]*k8sProbe{"live": c.LivenessProbe, "ready": c.ReadinessProbe} {
					if p == nil {
						t.Errorf("no %s probe", what)
						continue
					}
					code, body := probeAnswer(p.HTTPGet.Path)
					if p.HTTPGet.Port != metrics || code == 404 || body != what {
						t.Errorf("%s probe GET :%d%s (it answers %d %q); the %s serves /healthz (live) and /readyz (ready) on :%d", what, p.HTTPGet.Port, p.HTTPGet.Path, code, body, args[0], metrics)
					}
				}
				var endpoints []string
				for _, e := range cfg["etcd-endpoints"].([]any) {
					endpoints = append(endpoints, fmt.Sprint(e))
				}
				if strings.Join(endpoints, ",") != strings.Join(etcd, ",") {
					t.Errorf("etcd endpoints %v; the etcd StatefulSet's members are %v", endpoints, etcd)
				}
				ann := o.Spec.Template.Metadata.Annotations
				if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(metrics) || ann["prometheus.io/path"] != "/metrics" {
					t.Errorf("prometheus annotations %v; metrics are on :%d/metrics", ann, metrics)
				}
			})
		}
	}
	for _, cmd := range []string{"manager", "worker"} {
		if !checked[cmd] {
			t.Errorf("no manifest runs sluice %s", cmd)
		}
	}
	// Services point at ports the pods have.
	for _, o := range objs {
		if o.Kind != "Service" {
			continue
		}
		app, _ := o.Spec.Selector["app"].(string)
		ports, ok := podPorts[app]
		if !ok {
			continue // not a sluice service (etcd)
		}
		for _, p := range o.Spec.Ports {
			name, _ := p.TargetPort.(string)
			if ports[name] == 0 || ports[name] != p.Port {
				t.Errorf("service %s port %s (%d -> %v) does not match the pod's ports %v", o.Metadata.Name, p.Name, p.Port, p.TargetPort, ports)
			}
		}
	}
}

func TestSystemdUnits(t *testing.T) {
	for _, cmd := range []string{"manager", "worker"} {
		data, err := os.ReadFile(filepath.Join(deployDir, "systemd", "sluice-"+cmd+".service"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^ExecStart=(\S+) (.*)$`).FindSubmatch(data)
		if m == nil {
			t.Fatalf("sluice-%s.service has no ExecStart", cmd)
		}
		args := strings.Fields(string(m[2]))
		if args[0] != cmd {
			t.Fatalf("sluice-%s.service runs %q", cmd, args)
		}
		// The unit reads /etc/sluice/<cmd>.yaml: deploy/systemd/<cmd>.yaml
		// is the file to install there.
		for i, a := range args {
			if strings.HasPrefix(a, "/etc/sluice/") {
				args[i] = filepath.Join(deployDir, "systemd", filepath.Base(a))
			}
		}
		cfg := effectiveConfig(t, args, nil)
		if cmd == "worker" && len(cfg["data-dirs"].([]any)) == 0 {
			t.Error("worker.yaml has no data directories")
		}
	}
}

func TestStartScript(t *testing.T) {
	out, err := exec.Command("bash", filepath.Join(deployDir, "start.sh"), "--dry-run", "/data/1", "/data/2").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("start.sh --dry-run printed %q", out)
	}
	cfgs := map[string]map[string]any{}
	for _, l := range lines {
		f := strings.Fields(l)
		cfgs[f[1]] = effectiveConfig(t, f[1:], nil)
	}
	mgr, w := cfgs["manager"], cfgs["worker"]
	if mgr == nil || w == nil {
		t.Fatalf("start.sh does not start a manager and a worker: %q", out)
	}
	managers, _ := w["managers"].([]any)
	if len(managers) != 1 || portOf(t, managers[0]) != portOf(t, mgr["listen"]) {
		t.Errorf("the worker joins %v, the manager listens on %v", managers, mgr["listen"])
	}
}

func TestContainerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(deployDir, "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for _, p := range []int{7450, 7451, DefaultWorkerPort, DefaultWorkerMetricsPort} {
		if !regexp.MustCompile(`(?m)^EXPOSE .*\b` + strconv.Itoa(p) + `\b`).MatchString(s) {
			t.Errorf("Containerfile does not expose %d", p)
		}
	}
	if !strings.Contains(s, "go build") || !strings.Contains(s, "./tools/sluice") || !strings.Contains(s, `ENTRYPOINT ["/usr/local/bin/sluice"]`) {
		t.Error("Containerfile does not build ./tools/sluice into /usr/local/bin/sluice as its entry point")
	}
}
