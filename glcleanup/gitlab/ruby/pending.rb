# pending.rb: which container repositories GitLab will still try to delete, and when (instance-wide: they all
# go to the same registry), so the stub can tell whether switching off now would strand a retry.
#
# Params: {} (facts only). Read-only.
# Result: {"gitlab_version", "retry_cap", "pending": [{"id", "path", "project", "status", "failed_deletion_count",
#          "next_delete_attempt_at"}], "parked": int, "latest_retry_at": iso8601|null}
# ("project" is the project's full path, what `requeue --project` takes: `stub on --requeue` groups by it.)
QUEUED = Glcleanup.facts.fetch("requeue_state").freeze
PARKED = Glcleanup.facts.fetch("parked_state").freeze
LOOPING = Glcleanup.facts.fetch("looping_states").freeze

Glcleanup.main do |_params|
  rows = ContainerRepository.where(status: LOOPING).includes(project: :route).order(:id).to_a
  pending = rows.map do |r|
    { "id" => r.id, "path" => r.path.to_s, "project" => r.project.full_path }.merge(Glcleanup.deletion_state(r))
  end
  retries = pending.filter_map { |p| p["next_delete_attempt_at"] if p["status"] == QUEUED }
  { "gitlab_version" => Gitlab::VERSION, "retry_cap" => Glcleanup.retry_cap, "pending" => pending,
    "parked" => ContainerRepository.where(status: PARKED).count, "latest_retry_at" => retries.max }
end
