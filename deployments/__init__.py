"""Ray Serve deployments (ingress, router, model replicas, tool runner) and the app builder.

`deployments.app:build_app` is the `import_path` of `cluster/serve_config.yaml`.
"""
