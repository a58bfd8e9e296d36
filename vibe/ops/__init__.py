"""Operations: health, metrics, alerts, the dashboard and its charts, reports, configuration
checks, circuit breakers and retries, logging, and the monitoring and deploy commands."""
