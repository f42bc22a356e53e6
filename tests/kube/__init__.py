"""Tests against a real kube-apiserver + etcd built from Go modules (see kubeenv.py)."""
