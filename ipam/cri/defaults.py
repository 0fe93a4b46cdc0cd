"""Where a CRI runtime listens and how long a call may take, without importing gRPC."""

# containerd's socket; CRI-O's is unix:///var/run/crio/crio.sock (crictl's list).
DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
TIMEOUT = 10.0  # seconds a call may take (crictl's default is 2 s; a busy node is slower)
