package container

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// criMaxMessage is the largest CRI answer accepted, the kubelet's bound.
const criMaxMessage = 16 << 20

// The CRI runtime service's methods memdiag calls (k8s.io/cri-api,
// pkg/apis/runtime/v1/api.proto, package runtime.v1).
const (
	criListPodSandbox = "/runtime.v1.RuntimeService/ListPodSandbox"
	criListContainers = "/runtime.v1.RuntimeService/ListContainers"
)

// criContainerRunning is ContainerState CONTAINER_RUNNING.
const criContainerRunning = 1

// ListCRI asks the CRI runtime listening on socket (containerd, cri-o)
// for its running containers and their pods, with the pods' labels and
// annotations. It only lists: it never changes anything.
//
// The two unary calls go over HTTP/2 without TLS on the unix socket
// (h2.go), as gRPC frames them, and the few fields used are decoded by
// hand with protowire: the gRPC and cri-api packages' initializers
// (protobuf descriptors of the whole CRI) cost every memdiag process about
// 1 MiB of resident memory, tracing or not, and net/http's about 3 MiB.
func ListCRI(ctx context.Context, socket string) ([]Named, error) {
	raw, err := criCall(ctx, socket, criListPodSandbox, nil)
	if err != nil {
		return nil, fmt.Errorf("CRI socket %s: ListPodSandbox: %v", socket, err)
	}
	pods := map[string]criPod{}
	err = eachField(raw, func(num protowire.Number, v []byte) error {
		if num != 1 { // ListPodSandboxResponse.items
			return nil
		}
		p, err := parseCRIPod(v)
		pods[p.id] = p
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("CRI socket %s: ListPodSandbox: %v", socket, err)
	}
	// ListContainersRequest{filter: {state: {state: CONTAINER_RUNNING}}}
	var state, filter, req []byte
	state = protowire.AppendTag(state, 1, protowire.VarintType)
	state = protowire.AppendVarint(state, criContainerRunning)
	filter = protowire.AppendTag(filter, 2, protowire.BytesType)
	filter = protowire.AppendBytes(filter, state)
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendBytes(req, filter)
	raw, err = criCall(ctx, socket, criListContainers, req)
	if err != nil {
		return nil, fmt.Errorf("CRI socket %s: ListContainers: %v", socket, err)
	}
	var out []Named
	err = eachField(raw, func(num protowire.Number, v []byte) error {
		if num != 1 { // ListContainersResponse.containers
			return nil
		}
		c, err := parseCRIContainer(v)
		if err != nil || IDOf(c.id) == "" {
			return err
		}
		n := Named{ID: c.id, Runtime: "kubernetes", Container: c.name}
		n.Namespace, n.Pod, n.PodUID = c.labels["io.kubernetes.pod.namespace"], c.labels["io.kubernetes.pod.name"], c.labels["io.kubernetes.pod.uid"]
		if sb, ok := pods[c.podID]; ok {
			n.Namespace, n.Pod, n.PodUID = sb.namespace, sb.name, sb.uid
			n.Labels, n.Annotations = sb.labels, sb.annotations
		}
		if n.Namespace == "" || n.Pod == "" || n.Container == "" {
			return nil // not a pod's container
		}
		out = append(out, kubeNamed(n))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("CRI socket %s: ListContainers: %v", socket, err)
	}
	return out, nil
}

// criCall sends one request message to method on socket and returns the
// answer's message (gRPC's length-prefixed framing, no compression).
func criCall(ctx context.Context, socket, method string, msg []byte) ([]byte, error) {
	body := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	body = append(body, msg...)
	a, err := h2UnaryCall(ctx, socket, method, body, 5+criMaxMessage)
	if err != nil {
		return nil, err
	}
	if st := a.header[":status"]; st != "200" {
		return nil, fmt.Errorf("HTTP status %s", st)
	}
	// The status comes in the trailers, or in the headers of an answer
	// without a message (gRPC's trailers-only response).
	status, message := a.trailer["grpc-status"], a.trailer["grpc-message"]
	if a.trailer == nil {
		status, message = a.header["grpc-status"], a.header["grpc-message"]
	}
	if status != "0" {
		if m, err := url.PathUnescape(message); err == nil {
			message = m
		}
		code, err := strconv.Atoi(status)
		if err != nil {
			return nil, fmt.Errorf("no gRPC status in the answer (%q)", status)
		}
		return nil, fmt.Errorf("rpc error: code = %s desc = %s", grpcCode(code), message)
	}
	data := a.body
	if len(data) < 5 {
		return nil, errors.New("gRPC answer without a message")
	}
	if data[0] != 0 {
		return nil, errors.New("compressed gRPC answer (none was asked for)")
	}
	if n := binary.BigEndian.Uint32(data[1:5]); uint32(len(data)-5) != n {
		return nil, fmt.Errorf("gRPC answer of %d bytes announces %d", len(data)-5, n)
	}
	return data[5:], nil
}

// grpcCode names gRPC's status codes as grpc-go's errors do.
func grpcCode(code int) string {
	names := [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
		"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
		"OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}
	if code >= 0 && code < len(names) {
		return names[code]
	}
	return "Code(" + strconv.Itoa(code) + ")"
}

// criPod is the part of a PodSandbox memdiag uses.
type criPod struct {
	id, name, uid, namespace string
	labels, annotations      map[string]string
}

// parseCRIPod decodes a PodSandbox: id 1, metadata 2 (name 1, uid 2,
// namespace 3), labels 5, annotations 6.
func parseCRIPod(b []byte) (criPod, error) {
	var p criPod
	err := eachField(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			p.id = string(v)
		case 2:
			return eachField(v, func(num protowire.Number, v []byte) error {
				switch num {
				case 1:
					p.name = string(v)
				case 2:
					p.uid = string(v)
				case 3:
					p.namespace = string(v)
				}
				return nil
			})
		case 5:
			return addMapEntry(&p.labels, v)
		case 6:
			return addMapEntry(&p.annotations, v)
		}
		return nil
	})
	return p, err
}

// criContainer is the part of a Container memdiag uses.
type criContainer struct {
	id, podID, name string
	labels          map[string]string
}

// parseCRIContainer decodes a Container: id 1, pod_sandbox_id 2, metadata
// 3 (name 1), labels 8.
func parseCRIContainer(b []byte) (criContainer, error) {
	var c criContainer
	err := eachField(b, func(num protowire.Number, v []byte) error {
		switch num {
		case 1:
			c.id = string(v)
		case 2:
			c.podID = string(v)
		case 3:
			return eachField(v, func(num protowire.Number, v []byte) error {
				if num == 1 {
					c.name = string(v)
				}
				return nil
			})
		case 8:
			return addMapEntry(&c.labels, v)
		}
		return nil
	})
	return c, err
}

// addMapEntry decodes one entry of a map<string, string> (key 1, value 2)
// into *m.
func addMapEntry(m *map[string]string, b []byte) error {
	var k, v string
	err := eachField(b, func(num protowire.Number, b []byte) error {
		switch num {
		case 1:
			k = string(b)
		case 2:
			v = string(b)
		}
		return nil
	})
	if *m == nil {
		*m = map[string]string{}
	}
	(*m)[k] = v
	return err
}

// eachField calls f with the number and contents of every length-delimited
// field of the message b (strings, bytes, messages, map entries), and
// skips the others.
func eachField(b []byte, f func(num protowire.Number, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("decoding a CRI message: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("decoding a CRI message: %w", protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return fmt.Errorf("decoding a CRI message: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, v); err != nil {
			return err
		}
	}
	return nil
}
