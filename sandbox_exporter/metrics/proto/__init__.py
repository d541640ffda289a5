"""prometheus/client_model's `metrics.proto`, compiled by protoc: generated, not
edited. `scripts/compile-metrics-proto.sh` remakes it; a test checks it is current."""
