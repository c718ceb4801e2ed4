# finish.rb: `stop-loop --mode finish` -- delete the repositories' tags the way Distribution 2.x supports,
# through GitLab's own Projects::ContainerRepository::ThirdParty::DeleteTagsService (a dummy manifest is
# PUT over each tag, then the one dummy digest is deleted), then remove the rows as GitLab's worker does
# on success. One runner boot: preflight, plan, journal, registry work, row removal.
#
# Params: {"project": full_path, "repositories": [id, ...] (optional narrowing), "apply": bool,
#          "batch_size": int}
# Events (glcleanup acts on each at once):
#   {"registry_journal": {...}}  BEFORE the first registry write: every target row in full and every
#                                tag -> digest; raises if stdout is gone, so nothing is deleted unheard.
#   {"progress": {"id", "path", "done", "total"}}  after each batch of tags.
#   {"journal": {...}}           inside the transaction that removes a row, before destroy!.
#   {"applied": {"after": []}}   that transaction committed.
# Result: {"plan", "applied", "verified", "registry": [...], "changed", ...}; see glcleanup/ops/stop_loop.py.
LOOPING = Glcleanup.facts.fetch("looping_states").freeze
SERVICE = "Projects::ContainerRepository::ThirdParty::DeleteTagsService"

module Finish
  module_function

  def describe(repo)
    { "id" => repo.id, "path" => repo.path.to_s, "name" => repo.name, "action" => "finish",
      "from" => repo.status, "to" => "removed" }.merge(Glcleanup.deletion_state(repo))
  end

  def service
    SERVICE.split("::").inject(Object) { |mod, name| mod.const_get(name, false) }
  rescue NameError
    nil
  end

  # Everything finish needs from GitLab, checked before anything is read from or written to the registry:
  # the third-party service, registry settings, GitLab's signing key, and GitLab reaching its registry.
  def preflight!(repo)
    Glcleanup.refuse!("refused", "this GitLab (#{Gitlab::VERSION}) has no #{SERVICE}; nothing was changed") if service.nil?
    registry = Gitlab.config.registry
    unless registry.enabled && registry.api_url.to_s.strip != ""
      Glcleanup.refuse!("refused", "GitLab's container registry is not enabled or has no api_url " \
                                   "(gitlab_rails['registry_api_url']); nothing was changed")
    end
    key = registry.key.to_s
    unless File.file?(key) && File.readable?(key)
      Glcleanup.refuse!("refused", "GitLab's registry signing key is missing or unreadable (#{key.empty? ? 'not set' : key}; " \
                                   "gitlab_rails['registry_key_path']): GitLab cannot sign registry requests; nothing was changed")
    end
    reached = begin
      repo.client.connected?
    rescue StandardError => e
      Glcleanup.refuse!("refused", "GitLab cannot reach its registry at #{registry.api_url} (#{e.class}: " \
                                   "#{e.message.to_s[0, 160]}); nothing was changed")
    end
    return if reached

    Glcleanup.refuse!("refused", "GitLab's registry at #{registry.api_url} does not answer GET /v2/ with 2xx " \
                                 "(wrong registry_api_url, or it refuses GitLab's token); nothing was changed")
  end

  # Tags as GitLab lists them (tags/list, sorted), each with its digest (HEAD with GitLab's Accept header).
  def tags_of(repo)
    repo.tags.map { |t| { "tag" => t.name, "digest" => t.digest } }
  end

  # A fresh tags/list (not the memoized manifest): nil when the registry did not answer 2xx.
  def live_tags(repo)
    listing = repo.client.repository_tags(repo.path)
    listing.is_a?(Hash) ? Array(listing["tags"]).map(&:to_s).sort : nil
  end


  # All tags through GitLab's service, batch by batch, into `done` (kept when a batch raises); stops at
  # the first batch that did not delete every one of its tags. Returns the error, or nil.
  def delete_tags(repo, names, batch_size, done)
    names.each_slice(batch_size) do |batch|
      response = service.new(repo, batch).execute
      deleted = Array(response[:deleted]).map(&:to_s)
      done.concat(deleted & batch)
      Glcleanup.tell({ "progress" => { "id" => repo.id, "path" => repo.path.to_s, "done" => done.size, "total" => names.size } })
      if response[:status] != :success || !(batch - deleted).empty?
        return response[:message] || "the registry refused the dummy manifest for #{(batch - deleted).size} tag(s)"
      end
    end
    nil
  end
end

Glcleanup.main do |params|
  project, repos = Glcleanup.project_repositories(params)
  batch_size = params["batch_size"].to_i.clamp(1, 1000)

  targets = repos.select { |r| LOOPING.include?(r.status) }
  Finish.preflight!(targets.first) unless targets.empty?

  columns = ContainerRepository.column_names
  plan = targets.map { |r| Finish.describe(r).merge("tags" => Finish.tags_of(r)) }
  result = {
    "gitlab_version" => Gitlab::VERSION, "retry_cap" => Glcleanup.retry_cap, "columns" => columns,
    "project" => { "id" => project.id, "full_path" => project.full_path }, "mode" => "finish",
    "registry_url" => targets.empty? ? nil : Gitlab.config.registry.api_url,
    "plan" => plan, "applied" => false, "verified" => targets.empty?, "rounds" => 0, "reapplied" => [],
    "already_failed" => repos.select { |r| r.status == "delete_failed" }.map { |r| Finish.describe(r).merge("action" => "none") },
    "cleanup_policies" => [], "registry" => [], "changed" => []
  }
  next result if !params["apply"] || plan.empty?

  # --- the journal goes out before the first registry write: the tag -> digest map cannot be rebuilt ---
  journal = {
    "gitlab_version" => Gitlab::VERSION, "columns" => columns, "policy_columns" => [], "policies" => [],
    "project" => result["project"], "mode" => "finish", "changes" => [],
    "rows" => targets.map { |r| Glcleanup.raw_row(r) },
    "registry" => { "url" => result["registry_url"],
                    "tags" => plan.to_h { |p| [p["id"].to_s, p["tags"]] } }
  }
  Rails.logger.info("glcleanup stop-loop finish journal: #{JSON.generate(journal)}")
  Glcleanup.event({ "registry_journal" => journal })

  targets.each do |repo|
    entry = { "id" => repo.id, "path" => repo.path.to_s, "tags_before" => plan.find { |p| p["id"] == repo.id }["tags"].size }
    result["registry"] << entry
    names = plan.find { |p| p["id"] == repo.id }["tags"].map { |t| t["tag"] }
    deleted = []
    error = begin
      Finish.delete_tags(repo, names, batch_size, deleted)
    rescue StandardError => e
      "#{e.class}: #{e.message}"
    end
    entry["deleted"] = deleted.size
    left = begin
      Finish.live_tags(repo)
    rescue StandardError => e
      error ||= "tags/list failed: #{e.class}: #{e.message}"
      nil
    end
    entry["left"] = left
    if error.nil? && left.nil? && !names.empty?
      error = "tags/list did not answer 2xx after the deletes: cannot prove the repository is empty"
    end
    error ||= "#{left.size} tag(s) still listed after the deletes" if left && !left.empty?
    if error
      entry["error"] = error
      entry["row"] = "untouched"
      next
    end

    # --- the registry is empty for this repository: remove the row as GitLab's worker does on success ---
    ApplicationRecord.transaction do
      fresh = ContainerRepository.where(id: repo.id).first
      if fresh.nil?
        entry["row"] = "already removed (GitLab's worker saw no tags and destroyed it)"
      elsif !LOOPING.include?(fresh.status)
        entry["row"] = "left as #{fresh.status || 'active'} (changed since the plan)"
      else
        change = { "id" => fresh.id, "action" => "destroy", "path" => fresh.path.to_s }
        Glcleanup.event({ "journal" => { "rows" => [Glcleanup.raw_row(fresh)], "changes" => [change] } })
        fresh.destroy!
        result["changed"] << change
        entry["row"] = "removed"
      end
    end
    Glcleanup.tell({ "applied" => { "after" => [] } }) if entry["row"] == "removed"
  end

  # Applied: something changed, in the registry (irreversible) or in GitLab (a row removed).
  result["applied"] = !result["changed"].empty? || result["registry"].any? { |e| e["deleted"].to_i.positive? }
  gone = targets.map(&:id).reject { |id| ContainerRepository.where(id: id).exists? }
  result["final"] = targets.map { |r| { "id" => r.id, "removed" => gone.include?(r.id) } }
  result["verified"] = result["registry"].all? { |e| e["error"].nil? } && gone.size == targets.size
  result["still_looping"] = ContainerRepository.where(id: targets.map(&:id) - gone).map { |r| { "id" => r.id, "status" => r.status } }
  result
end
