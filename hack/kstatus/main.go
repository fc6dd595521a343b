// Command kstatus prints how kstatus (sigs.k8s.io/cli-utils/pkg/kstatus), the status library
// Flux's kustomize-controller and helm-controller use for health checks and `wait: true`,
// reads Kubernetes objects.
//
// It reads objects from stdin, as a JSON array, a JSON or YAML stream (documents separated by
// ---), or a List kind, and prints one JSON line per object in input order:
//
//	{"apiVersion":"nimop.dev/v1alpha1","kind":"NimService","namespace":"ai","name":"llama",
//	 "status":"Current","message":"Resource is Ready"}
//
// status is one of InProgress, Failed, Current, Terminating or Unknown. An object kstatus
// cannot compute gets status Unknown and an "error" field, and the exit code is 1; input that
// cannot be parsed exits 2. Used by tests/unit/test_gitops_health.py; build with build.sh.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type line struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Status     string `json:"status"`
	Message    string `json:"message"`
	Error      string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: kstatus < objects.{json,yaml}")
		os.Exit(2)
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	objects, err := parse(data)
	if err != nil {
		fail(err)
	}
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	failed := false
	for _, u := range objects {
		l := line{
			APIVersion: u.GetAPIVersion(),
			Kind:       u.GetKind(),
			Namespace:  u.GetNamespace(),
			Name:       u.GetName(),
		}
		res, err := status.Compute(u)
		if err != nil {
			l.Status, l.Error, failed = string(status.UnknownStatus), err.Error(), true
		} else {
			l.Status, l.Message = string(res.Status), res.Message
		}
		if err := enc.Encode(l); err != nil {
			fail(err)
		}
	}
	if err := out.Flush(); err != nil {
		fail(err)
	}
	if failed {
		os.Exit(1)
	}
}

// parse splits the input into objects. Every object goes through apimachinery's JSON decoding,
// as objects read from the API server do, so integers stay int64 (kstatus reads
// metadata.generation and status.observedGeneration with NestedInt64).
func parse(data []byte) ([]*unstructured.Unstructured, error) {
	var docs []json.RawMessage
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '[' {
		if err := json.Unmarshal(trimmed, &docs); err != nil {
			return nil, fmt.Errorf("reading JSON array: %w", err)
		}
	} else {
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var doc json.RawMessage
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("reading document %d: %w", len(docs)+1, err)
			}
			docs = append(docs, doc)
		}
	}
	var objects []*unstructured.Unstructured
	for i, doc := range docs {
		if t := bytes.TrimSpace(doc); len(t) == 0 || bytes.Equal(t, []byte("null")) {
			continue // an empty YAML document
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(doc); err != nil {
			return nil, fmt.Errorf("object %d: %w", i+1, err)
		}
		if !u.IsList() {
			objects = append(objects, u)
			continue
		}
		list, err := u.ToList()
		if err != nil {
			return nil, fmt.Errorf("object %d: %w", i+1, err)
		}
		for j := range list.Items {
			objects = append(objects, &list.Items[j])
		}
	}
	return objects, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(2)
}
