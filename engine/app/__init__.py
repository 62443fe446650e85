"""Services the dashboard uses: workspace, background jobs, upload sessions, review log, path policy, explore."""
