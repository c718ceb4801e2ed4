# scan.rb: the exact deletion state of container repositories, read-only.
#
# Params: {"projects": [full_path, ...] (optional), "group": full_path (optional)}
# Result: {"gitlab_version", "columns", "retry_cap", "repositories": [...], "cleanup_policies": [...]}
#   repositories: rows whose status is delete_scheduled, delete_ongoing or delete_failed.
#   cleanup_policies: rows whose cleanup-policy run is scheduled, unfinished or ongoing (they loop too).
Glcleanup.main do |params|
  columns = ContainerRepository.column_names

  scope = ContainerRepository.all
  wanted = Array(params["projects"])
  unless wanted.empty?
    ids = wanted.map do |path|
      project = Project.find_by_full_path(path)
      Glcleanup.refuse!("not_found", "project not found: #{path}") if project.nil?
      project.id
    end
    scope = scope.where(project_id: ids)
  end
  group = params["group"]
  in_group = ->(repo) { group.nil? || repo.project.full_path.downcase.start_with?("#{group.downcase}/") }

  describe = lambda do |repo|
    { "id" => repo.id, "project_id" => repo.project_id, "project" => repo.project.full_path,
      "path" => repo.path.to_s, "name" => repo.name }
      .merge(Glcleanup.deletion_state(repo))
      .merge("cleanup_policy_enabled" => repo.project.container_expiration_policy&.enabled ? true : false)
  end

  facts = Glcleanup.facts
  deleting = scope.where(status: facts.fetch("deletion_states")).order(:id).to_a
  cleaning = scope.where(expiration_policy_cleanup_status: facts.fetch("cleanup_looping_states")).order(:id).to_a

  {
    "gitlab_version" => Gitlab::VERSION,
    "columns" => columns,
    "retry_cap" => Glcleanup.retry_cap,
    "repositories" => deleting.select(&in_group).map(&describe),
    "cleanup_policies" => cleaning.select(&in_group).map(&describe)
  }
end
