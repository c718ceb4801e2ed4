# stop_loop.rb: plan, journal, apply and verify the stop of a deletion loop, in one runner boot.
#
# Params: {"project": full_path, "repositories": [id, ...] (optional narrowing), "mode": "done"|"failed",
#          "apply": bool, "settle": seconds, "poll": seconds, "max_rounds": int, "disable_cleanup_policy": bool}
# Events (before/after changes, so glcleanup can write its journal first):
#   {"journal": {...}}  every row about to change, in full, emitted INSIDE the transaction before any write;
#                       if the line cannot be written (connection cut) the exception rolls everything back.
#   {"applied": {...}}  the transaction committed; rows as we left them.
#   {"reapplied": {...}} a running worker wrote a target row back; it was put back as we left it.
# Result: {"plan", "applied", "verified", "rounds", "reapplied", "after", ...}; see glcleanup/stop_loop.py.
LOOPING = Glcleanup.facts.fetch("looping_states").freeze
CLEANUP_LOOPING = Glcleanup.facts.fetch("cleanup_looping_states").freeze

module StopLoop
  module_function

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def max_failures
    ContainerRepository.const_defined?(:MAX_DELETION_FAILURES) ? ContainerRepository::MAX_DELETION_FAILURES : nil
  end

  def describe(repo, action, from, to)
    { "id" => repo.id, "path" => repo.path.to_s, "name" => repo.name, "action" => action,
      "from" => from, "to" => to }.merge(Glcleanup.deletion_state(repo)).merge("location" => repo.location)
  end

  # GitLab's own "parked" state: what 17.6's worker does after 10 failures. Enum names, never integers.
  def park(repo)
    if repo.respond_to?(:set_delete_failed_status)
      repo.set_delete_failed_status
    else
      repo.update_columns(status: :delete_failed, delete_started_at: nil, status_updated_at: Time.current)
    end
    max = max_failures
    return unless max && repo.has_attribute?(:failed_deletion_count)

    count = repo.failed_deletion_count.to_i
    repo.update_columns(failed_deletion_count: count.clamp(0, max)) unless count.between?(0, max)
  end

  # After the commit nobody may be listening (a cut connection closes our stdout): keep verifying anyway,
  # because the verification is what protects the change from a worker's write-back.
  def tell(document)
    Glcleanup.event(document)
    true
  rescue SystemCallError, IOError
    false
  end

  def requeue_hint(ids)
    reset = max_failures ? ", failed_deletion_count: 0, next_delete_attempt_at: nil" : ""
    "after fixing the registry, re-queue with `glcleanup undo` (restores the journaled rows) or in " \
      "`gitlab-rails console`: ContainerRepository.where(id: #{ids.inspect}).each { |r| " \
      "r.update_columns(status: :delete_scheduled, delete_started_at: nil#{reset}) }"
  end
end

Glcleanup.main do |params|
  mode = params["mode"].to_s
  Glcleanup.refuse!("refused", "mode must be done or failed, got #{mode.inspect}") unless %w[done failed].include?(mode)
  path = params["project"].to_s
  project = Project.find_by_full_path(path)
  Glcleanup.refuse!("not_found", "project not found: #{path}") if project.nil?

  columns = ContainerRepository.column_names
  repos = project.container_repositories.to_a.sort_by(&:id)
  wanted = Array(params["repositories"]).map(&:to_i)
  unless wanted.empty?
    foreign = wanted - repos.map(&:id)
    unless foreign.empty?
      Glcleanup.refuse!("refused", "container repository #{foreign.join(', ')} does not belong to project " \
                                   "#{project.full_path}; nothing was changed")
    end
    repos = repos.select { |r| wanted.include?(r.id) }
  end

  disable_policy = params["disable_cleanup_policy"] ? true : false
  target_to = mode == "done" ? "removed" : "delete_failed"
  target_action = mode == "done" ? "destroy" : "park"
  targets = repos.select { |r| LOOPING.include?(r.status) }
  target_ids = targets.map(&:id)
  cleaning = repos.select { |r| CLEANUP_LOOPING.include?(r.expiration_policy_cleanup_status) }
  resets = disable_policy ? cleaning.reject { |r| mode == "done" && target_ids.include?(r.id) } : []
  policy = project.container_expiration_policy
  policy_on = policy && policy.enabled ? true : false

  plan = targets.map { |r| StopLoop.describe(r, target_action, r.status, target_to) }
  plan += resets.map do |r|
    StopLoop.describe(r, "reset_cleanup", r.expiration_policy_cleanup_status, "cleanup_unscheduled")
  end
  if disable_policy && policy_on
    plan << { "id" => nil, "path" => project.full_path, "action" => "disable_cleanup_policy",
              "from" => "enabled", "to" => "disabled" }
  end

  result = {
    "gitlab_version" => Gitlab::VERSION, "retry_cap" => Glcleanup.retry_cap, "columns" => columns,
    "project" => { "id" => project.id, "full_path" => project.full_path },
    "mode" => mode, "plan" => plan, "applied" => false, "verified" => target_ids.empty?,
    "already_failed" => repos.select { |r| r.status == "delete_failed" }
                             .map { |r| StopLoop.describe(r, "none", r.status, r.status) },
    "cleanup_policies" => cleaning.map do |r|
      StopLoop.describe(r, disable_policy ? "reset_cleanup" : "none", r.expiration_policy_cleanup_status,
                        disable_policy ? "cleanup_unscheduled" : r.expiration_policy_cleanup_status)
    end,
    "cleanup_policy_enabled" => policy_on, "rounds" => 0, "reapplied" => [],
    "requeue_hint" => mode == "failed" && !target_ids.empty? ? StopLoop.requeue_hint(target_ids) : nil
  }
  next result if !params["apply"] || plan.empty?

  # --- journal + apply: one transaction; the journal line goes out before the first write ---------------
  reset_ids = resets.map(&:id)
  touched_policy = disable_policy && policy_on
  changed = []
  begin
    ApplicationRecord.transaction do
      fresh = ContainerRepository.where(id: (target_ids + reset_ids).uniq).order(:id).to_a
      live_targets = fresh.select { |r| target_ids.include?(r.id) && LOOPING.include?(r.status) }
      live_resets = fresh.select { |r| reset_ids.include?(r.id) && CLEANUP_LOOPING.include?(r.expiration_policy_cleanup_status) }
      changes = live_targets.map { |r| { "id" => r.id, "action" => target_action, "path" => r.path.to_s } }
      changes += live_resets.map { |r| { "id" => r.id, "action" => "reset_cleanup", "path" => r.path.to_s } }
      rows = (live_targets + live_resets).uniq(&:id)
      journal = {
        "gitlab_version" => Gitlab::VERSION, "columns" => columns,
        "policy_columns" => touched_policy ? ContainerExpirationPolicy.column_names : [],
        "project" => result["project"], "mode" => mode, "changes" => changes,
        "rows" => rows.map { |r| Glcleanup.raw_row(r) },
        "policies" => touched_policy ? [Glcleanup.raw_row(policy)] : []
      }
      # A copy on the GitLab host too, in case the local one never arrives (a link that dies silently).
      Rails.logger.info("glcleanup stop-loop journal: #{JSON.generate(journal)}")
      Glcleanup.event({ "journal" => journal }) # raises if stdout is gone: the transaction rolls back
      live_targets.each { |r| mode == "done" ? r.destroy! : StopLoop.park(r) }
      live_resets.each { |r| r.update_columns(expiration_policy_cleanup_status: :cleanup_unscheduled) }
      policy.update_columns(enabled: false) if touched_policy
      changed = changes
    end
  rescue StandardError => e
    result["error"] = "#{e.class}: #{e.message}"
    result["rolled_back"] = true
    next result
  end
  result["applied"] = true
  result["changed"] = changed

  kept_ids = changed.reject { |c| c["action"] == "destroy" }.map { |c| c["id"] }.uniq
  snapshot = lambda do
    { "after" => ContainerRepository.where(id: kept_ids).order(:id).map { |r| Glcleanup.raw_row(r) },
      "policies_after" => touched_policy ? [Glcleanup.raw_row(project.reload.container_expiration_policy)] : [] }
  end
  StopLoop.tell({ "applied" => snapshot.call })

  # --- verify: a worker that was mid-pass writes its result back by id (update_columns), undoing ours ---
  settle = params["settle"].to_f
  poll = [[params["poll"].to_f, 0.01].max, [settle, 0.01].max].min
  deadline = StopLoop.monotonic + settle * [params["max_rounds"].to_i, 1].max
  park_ids = changed.select { |c| c["action"] == "park" }.map { |c| c["id"] }
  destroy_ids = changed.select { |c| c["action"] == "destroy" }.map { |c| c["id"] }
  watch_reset = changed.select { |c| c["action"] == "reset_cleanup" }.map { |c| c["id"] }
  last_change = StopLoop.monotonic
  rounds = 1
  verified = false
  back_rows = []
  begin
    loop do
      back_rows = []
      ApplicationRecord.transaction do
        current = ContainerRepository.where(id: (park_ids + destroy_ids + watch_reset).uniq).order(:id).to_a
        back = current.select { |r| (park_ids + destroy_ids).include?(r.id) && LOOPING.include?(r.status) }
        back_cleanup = current.select do |r|
          watch_reset.include?(r.id) && CLEANUP_LOOPING.include?(r.expiration_policy_cleanup_status)
        end
        back_rows = (back + back_cleanup).map { |r| { "id" => r.id, "status" => r.status,
                                                      "cleanup" => r.expiration_policy_cleanup_status } }
        fixable = back.select { |r| park_ids.include?(r.id) }
        fixable.each { |r| StopLoop.park(r) }
        back_cleanup.each { |r| r.update_columns(expiration_policy_cleanup_status: :cleanup_unscheduled) }
        unless fixable.empty? && back_cleanup.empty?
          result["reapplied"] << { "round" => rounds, "at" => Glcleanup.time(Time.current), "rows" => back_rows }
        end
      end
      now = StopLoop.monotonic
      if back_rows.empty?
        if now - last_change >= settle
          verified = true
          break
        end
      elsif back_rows.any? { |b| destroy_ids.include?(b["id"]) }
        break # a removed row is back: not ours to remove again without a new journal
      else
        rounds += 1
        last_change = now
        StopLoop.tell({ "reapplied" => snapshot.call.merge("round" => rounds, "rows" => back_rows) })
      end
      break if now >= deadline

      sleep([poll, [settle - (now - last_change), 0.01].max].min)
    end
  rescue StandardError => e
    result["verify_error"] = "#{e.class}: #{e.message}"
  end
  result["verified"] = verified
  result["rounds"] = rounds
  result["still_looping"] = back_rows unless verified
  result.merge!(snapshot.call)
  result["final"] = ContainerRepository.where(id: target_ids).order(:id).map do |r|
    { "id" => r.id, "status" => r.status, "expiration_policy_cleanup_status" => r.expiration_policy_cleanup_status }
  end
  result
end
