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

# A journal is data from a file anyone with the path could have written: before anything is read for
# real, every row must be one this journal's own stop-loop changed, in this project, with the recorded
# columns only and values of each column's type. Any doubt refuses the whole journal ("invalid": exit 2).
module UndoCheck
  module_function

  ACTIONS = %w[destroy park reset_cleanup requeue].freeze  # journal/verify.py KNOWN_ACTIONS, checked again here
  TIMESTAMP = /\A\d{4}-\d\d-\d\d(?:[ T]\d\d:\d\d:\d\d(?:\.\d{1,9})?)?(?:Z|[+-]\d\d(?::?\d\d)?)?\z/

  def invalid!(message)
    Glcleanup.refuse!("invalid", "journal refused, nothing changed: #{message}")
  end

  def id?(value)
    value.is_a?(Integer) && value.positive?
  end

  def value_ok?(model, column, value)
    return true if value.nil?

    case model.columns_hash[column]&.type
    when :integer, :bigint then value.is_a?(Integer) || (value.is_a?(String) && value.match?(/\A-?\d{1,19}\z/))
    when :string, :text then value.is_a?(String)
    when :datetime, :timestamp, :timestamptz, :date, :time then value.is_a?(String) && value.match?(TIMESTAMP)
    when :boolean then [true, false, 0, 1, "t", "f", "true", "false", "0", "1"].include?(value)
    when :float, :decimal then value.is_a?(Numeric) || (value.is_a?(String) && !Float(value, exception: false).nil?)
    when :json, :jsonb then true
    else value.is_a?(String) || value.is_a?(Numeric) || value == true || value == false
    end
  end

  def enum_ok?(column, value)
    return true if value.nil?

    enum = { "status" => ContainerRepository.statuses,
             "expiration_policy_cleanup_status" => ContainerRepository.expiration_policy_cleanup_statuses }[column]
    enum.nil? || enum.values.map(&:to_s).include?(value.to_s)
  end

  # A row of `model`: only columns the table has (and the journal recorded), each of its column's type.
  def check_row!(model, row, allowed, what)
    invalid!("#{what} is not a row object") unless row.is_a?(Hash)
    unknown = row.keys - allowed
    invalid!("#{what} has columns the journal did not record or the table lacks: #{unknown.first(5).inspect}") unless unknown.empty?
    row.each do |column, value|
      unless value_ok?(model, column, value) && (model != ContainerRepository || enum_ok?(column, value))
        invalid!("#{what}: #{column} = #{value.inspect[0, 60]} is not a value of that column's type")
      end
    end
  end

  def validate!(journal, project)
    changes = journal["changes"]
    invalid!("changes is not a list") unless changes.is_a?(Array)
    changes.each do |change|
      invalid!("a change is not an object") unless change.is_a?(Hash)
      invalid!("a change has a non-integer id #{change['id'].inspect[0, 40]}") unless id?(change["id"])
      unless ACTIONS.include?(change["action"])
        invalid!("change #{change['id']} has an unknown action #{change['action'].inspect[0, 40]}")
      end
    end
    changed = changes.map { |c| c["id"] }
    columns = ContainerRepository.column_names & Array(journal["columns"])
    %w[rows after].each do |key|
      list = journal.fetch(key, [])
      invalid!("#{key} is not a list") unless list.is_a?(Array)
      seen = []
      list.each do |row|
        check_row!(ContainerRepository, row, columns, "#{key} row #{row.is_a?(Hash) ? row['id'] : '?'}")
        invalid!("#{key} holds row #{row['id'].inspect[0, 40]}, which no change names") unless changed.include?(row["id"])
        invalid!("#{key} holds row #{row['id']} twice") if seen.include?(row["id"])
        seen << row["id"]
        unless row["project_id"].to_s == project.id.to_s
          invalid!("#{key} row #{row['id']} has project_id #{row['project_id'].inspect[0, 40]}, not #{project.full_path}'s (#{project.id})")
        end
      end
    end
    # The database's own word: a row that exists belongs to this project, whatever the file says.
    ContainerRepository.where(id: changed.uniq).each do |current|
      next if current.project_id == project.id

      invalid!("container repository #{current.id} belongs to another project (id #{current.project_id}), not #{project.full_path}")
    end
    policy_columns = ContainerExpirationPolicy.column_names
    recorded = journal["policy_columns"]
    policy_columns &= Array(recorded) if recorded.is_a?(Array) && !recorded.empty?
    %w[policies policies_after].each do |key|
      list = journal.fetch(key, [])
      invalid!("#{key} is not a list") unless list.is_a?(Array)
      invalid!("#{key} holds #{list.size} policies; a journal has at most its project's one") if list.size > 1
      list.each do |policy|
        check_row!(ContainerExpirationPolicy, policy, policy_columns, "#{key} entry")
        unless policy["project_id"].to_s == project.id.to_s
          invalid!("#{key} is the cleanup policy of project #{policy['project_id'].inspect[0, 40]}, not #{project.full_path}'s")
        end
      end
    end
  end

  # Every column a restore would write that differs from the row now (all of them for a re-created row).
  def changing_columns(current, expected)
    return expected.reject { |_k, v| v.nil? }.keys.sort if current.nil?

    Undo.diff(Glcleanup.raw_row(current), expected).select { |k| expected.key?(k) }.sort
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
  UndoCheck.validate!(journal, project)

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
              "from" => current ? (current.status || "active") : "absent", "to" => Undo.target(raw, acts),
              "columns" => UndoCheck.changing_columns(current, raw) }
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
                 "from" => policy&.enabled ? "enabled" : "disabled", "to" => "enabled", "how" => "restore columns",
                 "columns" => policy ? UndoCheck.changing_columns(policy, policy_raw) : [] }
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
