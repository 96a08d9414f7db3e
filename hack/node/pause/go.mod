// The sandbox ("pause") image of the node harness: no registry is reachable, so
// registry.k8s.io/pause cannot be pulled. Built by hack/build-images.sh (no dependencies).
module buntime/hack/node/pause

go 1.23.0
