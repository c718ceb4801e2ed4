# undo.rb: put back exactly what a stop-loop journal recorded, or refuse with nothing changed.
#
# Params: {"journal": {"project": {"id", "full_path"}, "columns", "changes": [{"id", "action"}],
#                      "rows": [raw row], "after": [raw row], "policies": [raw], "policies_after": [raw]},
#          "apply": bool}
# Removed rows are re-created with their ids and raw values (insert_all); parked rows get their journaled
# columns back (update_columns). Refused when anything changed since stop-loop left it: a removed row
# that exists again (or a new repository with its name), a kept row not as we left it.
# Result: {"project", "restore": [...], "applied", "exact", "mismatches"}.
module Undo
  module_function

  def status_name(raw)
    raw.nil? ? "active" : ContainerRepository.statuses.key(raw.to_i)
  end

  def target(raw, acts)
    return status_name(raw["status"]) unless acts == ["reset_cleanup"]

    ContainerRepository.expiration_policy_cleanup_statuses.key(raw["expiration_policy_cleanup_status"].to_i)
  end

  def diff(current, expected)
    (current.keys | expected.keys).reject { |k| current[k].to_s == expected[k].to_s }
  end
end

Glcleanup.main do |params|
  journal = params["journal"] || {}
  info = journal["project"] || {}
  project = Project.find_by_full_path(info["full_path"].to_s)
  Glcleanup.refuse!("not_found", "project not found: #{info['full_path']}") if project.nil?
  if project.id != info["id"].to_i
    Glcleanup.refuse!("refused", "project #{info['full_path']} has id #{project.id} here, the journal recorded " \
                                 "#{info['id']}: another GitLab instance, or the project was re-created; nothing changed")
  end
  columns = ContainerRepository.column_names
  unless columns.sort == Array(journal["columns"]).sort
    Glcleanup.refuse!("refused", "container_repositories columns differ from the journal's (GitLab was upgraded " \
                                 "since?): #{(columns - Array(journal['columns'])) | (Array(journal['columns']) - columns)}; nothing changed")
  end

  rows = Array(journal["rows"]).to_h { |r| [r["id"].to_i, r] }
  after = journal.key?("after") ? Array(journal["after"]).to_h { |r| [r["id"].to_i, r] } : nil
  actions = Hash.new { |h, k| h[k] = [] }
  Array(journal["changes"]).each { |c| actions[c["id"].to_i] << c["action"] }
  problems = []
  restore = []

  # A run cut off before its commit (journal written, transaction rolled back): nothing to put back.
  untouched = actions.keys.all? do |id|
    current = ContainerRepository.where(id: id).first
    current && rows[id] && Undo.diff(Glcleanup.raw_row(current), rows[id]).empty?
  end
  policy_now = project.container_expiration_policy
  first_policy = Array(journal["policies"]).first
  untouched &&= first_policy.nil? || (policy_now && Undo.diff(Glcleanup.raw_row(policy_now), first_policy).empty?)
  next({ "project" => info, "restore" => [], "applied" => false, "never_applied" => true }) if untouched && !actions.empty?

  actions.each do |id, acts|
    raw = rows[id]
    Glcleanup.refuse!("refused", "journal has a change for #{id} but not its row; nothing changed") if raw.nil?
    current = ContainerRepository.where(id: id).first
    entry = { "id" => id, "name" => raw["name"], "actions" => acts,
              "from" => current ? (current.status || "active") : "absent", "to" => Undo.target(raw, acts) }
    if acts.include?("destroy")
      if current
        problems << "container repository #{id} exists again (status #{current.status || 'active'})"
      elsif (twin = project.container_repositories.where(name: raw["name"]).first)
        problems << "project #{project.full_path} has a new repository named #{raw['name'].inspect} (id #{twin.id})"
      end
      entry["how"] = "re-create"
    elsif current.nil?
      problems << "container repository #{id} was removed since stop-loop parked it"
    elsif after&.key?(id)
      changed = Undo.diff(Glcleanup.raw_row(current), after[id])
      problems << "container repository #{id} changed since stop-loop left it (#{changed.join(', ')})" unless changed.empty?
      entry["how"] = "restore columns"
    else # the result never arrived: check what stop-loop set
      problems << "container repository #{id} is #{current.status || 'active'}, not delete_failed" if acts.include?("park") && current.status != "delete_failed"
      if acts.include?("reset_cleanup") && current.expiration_policy_cleanup_status != "cleanup_unscheduled"
        problems << "container repository #{id} cleanup status is #{current.expiration_policy_cleanup_status}"
      end
      entry["how"] = "restore columns"
    end
    restore << entry
  end

  policy_raw = Array(journal["policies"]).first
  if policy_raw
    policy = project.container_expiration_policy
    if policy.nil?
      problems << "the cleanup policy of #{project.full_path} is gone"
    else
      expected = Array(journal["policies_after"]).first
      now = Glcleanup.raw_row(policy)
      if expected ? !Undo.diff(now, expected).empty? : policy.enabled
        problems << "the cleanup policy of #{project.full_path} changed since stop-loop disabled it"
      end
    end
    restore << { "id" => nil, "name" => "cleanup policy", "actions" => ["disable_cleanup_policy"],
                 "from" => policy&.enabled ? "enabled" : "disabled", "to" => "enabled", "how" => "restore columns" }
  end

  unless problems.empty?
    Glcleanup.refuse!("refused", "cannot undo, rows changed since stop-loop (nothing was changed): #{problems.join('; ')}")
  end
  result = { "project" => info, "restore" => restore, "applied" => false, "exact" => nil, "mismatches" => [] }
  next result unless params["apply"]

  recreate = actions.select { |_id, acts| acts.include?("destroy") }.keys
  ApplicationRecord.transaction do
    # insert_all is INSERT ... ON CONFLICT DO NOTHING: a row that conflicts (a repository re-created under the
    # same name meanwhile) is skipped without an error. All or nothing: count what is there, else roll back.
    unless recreate.empty?
      ContainerRepository.insert_all(recreate.map { |id| rows[id] })
      present = ContainerRepository.where(id: recreate).count
      if present != recreate.size
        Glcleanup.refuse!("refused", "undo re-created #{present} of #{recreate.size} removed repositories (a " \
                                     "conflicting row appeared meanwhile); rolled back, nothing was changed")
      end
    end
    (actions.keys - recreate).each do |id|
      current = ContainerRepository.lock.find_by(id: id) # as checked above, now under a row lock
      expected = after&.[](id)
      if current.nil? || (expected && !Undo.diff(Glcleanup.raw_row(current), expected).empty?)
        Glcleanup.refuse!("refused", "container repository #{id} changed while undo ran; rolled back, nothing was changed")
      end
      current.update_columns(rows[id].except("id"))
    end
    if policy_raw
      key = ContainerExpirationPolicy.primary_key
      project.container_expiration_policy.update_columns(policy_raw.except(key))
    end
  end
  result["applied"] = true

  actions.each_key do |id|
    current = ContainerRepository.where(id: id).first
    changed = current ? Undo.diff(Glcleanup.raw_row(current), rows[id]) : ["(row missing)"]
    result["mismatches"] << { "id" => id, "columns" => changed } unless changed.empty?
  end
  if policy_raw
    changed = Undo.diff(Glcleanup.raw_row(project.reload.container_expiration_policy), policy_raw)
    result["mismatches"] << { "id" => nil, "columns" => changed } unless changed.empty?
  end
  result["exact"] = result["mismatches"].empty?
  result
end
