"""What the people who run the service read: `/metrics` for Prometheus, `/readyz` for load balancers."""
