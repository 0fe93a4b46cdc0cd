"""The CRI API subset the tests drive containerd with: api.proto and what `make cri-proto`
generates from it."""
