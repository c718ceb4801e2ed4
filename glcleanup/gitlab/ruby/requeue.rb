# requeue.rb: put parked (delete_failed) or backed-off rows back in GitLab's deletion queue, in one runner boot.
#
# Params: {"project": full_path, "repositories": [id, ...] (optional narrowing), "apply": bool}
# A row is requeued when it is parked (the parked state: GitLab 17.6's cap, or `stop-loop --mode failed`)
# or waiting in 17.5+'s backoff (the requeue state with next_delete_attempt_at in the future, or a
# failed_deletion_count above 0). It goes back to the requeue state with delete_started_at nil and, where
# the retry columns exist, failed_deletion_count 0 and next_delete_attempt_at nil.
# Events: {"journal": {...}} inside the transaction before any write (stop-loop's journal format, action
#         "requeue"; `glcleanup undo` puts the columns back); {"applied": {"after": [...]}} after the commit.
# Result: {"plan", "applied", "verified", "after", "final", ...}; see glcleanup/ops/requeue.py.
PARKED = Glcleanup.facts.fetch("parked_state").freeze
QUEUED = Glcleanup.facts.fetch("requeue_state").freeze
RETRY_COLUMNS = Glcleanup.facts.fetch("retry_columns").freeze

module Requeue
  module_function

  def retry_columns?
    (RETRY_COLUMNS - ContainerRepository.column_names).empty?
  end

  # Why this row is waiting, or nil when requeue has nothing to do for it.
  def reason(repo, now)
    return "parked" if repo.status == PARKED
    return nil unless repo.status == QUEUED && retry_columns?

    waiting = repo.next_delete_attempt_at && repo.next_delete_attempt_at > now
    waiting || repo.failed_deletion_count.to_i.positive? ? "backoff" : nil
  end

  def describe(repo, why)
    { "id" => repo.id, "path" => repo.path.to_s, "name" => repo.name, "action" => "requeue", "reason" => why,
      "from" => repo.status, "to" => QUEUED }.merge(Glcleanup.deletion_state(repo))
  end

  def requeue(repo)
    values = { status: QUEUED, delete_started_at: nil, status_updated_at: Time.current }
    values.merge!(RETRY_COLUMNS.to_h { |c| [c.to_sym, c == "failed_deletion_count" ? 0 : nil] }) if retry_columns?
    repo.update_columns(values)
  end
end

Glcleanup.main do |params|
  project, repos = Glcleanup.project_repositories(params)

  now = Time.current
  targets = repos.filter_map { |r| (why = Requeue.reason(r, now)) && [r, why] }
  columns = ContainerRepository.column_names
  result = {
    "gitlab_version" => Gitlab::VERSION, "retry_cap" => Glcleanup.retry_cap, "columns" => columns,
    "project" => { "id" => project.id, "full_path" => project.full_path }, "mode" => "requeue",
    "plan" => targets.map { |r, why| Requeue.describe(r, why) }, "applied" => false, "verified" => targets.empty?,
    "after" => [], "final" => []
  }
  next result if !params["apply"] || targets.empty?

  ids = targets.map { |r, _| r.id }
  changed = []
  ApplicationRecord.transaction do
    fresh = ContainerRepository.where(id: ids).order(:id).to_a.filter_map { |r| (why = Requeue.reason(r, Time.current)) && [r, why] }
    changed = fresh.map { |r, why| { "id" => r.id, "action" => "requeue", "path" => r.path.to_s, "reason" => why } }
    journal = { "gitlab_version" => Gitlab::VERSION, "columns" => columns, "policy_columns" => [], "policies" => [],
                "project" => result["project"], "mode" => "requeue", "changes" => changed,
                "rows" => fresh.map { |r, _| Glcleanup.raw_row(r) } }
    Rails.logger.info("glcleanup requeue journal: #{JSON.generate(journal)}")
    Glcleanup.event({ "journal" => journal }) # raises if stdout is gone: the transaction rolls back
    fresh.each { |r, _| Requeue.requeue(r) }
  end
  result["applied"] = !changed.empty?
  result["changed"] = changed
  after = ContainerRepository.where(id: changed.map { |c| c["id"] }).order(:id).map { |r| Glcleanup.raw_row(r) }
  result["after"] = after
  begin
    Glcleanup.event({ "applied" => { "after" => after } })
  rescue SystemCallError, IOError
    nil # committed; the result line may still arrive
  end
  # Verified: every requeued row is back in the queue (or already taken, or already finished by GitLab).
  result["final"] = changed.map do |c|
    r = ContainerRepository.where(id: c["id"]).first
    { "id" => c["id"], "status" => r ? r.status : "removed" }
  end
  result["verified"] = result["final"].none? { |f| f["status"] == PARKED }
  result
end
