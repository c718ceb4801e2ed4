# scan.rb: the exact deletion state of container repositories, read-only.
#
# Params: {"projects": [full_path, ...] (optional), "group": full_path (optional); both: their union}
# Result: {"gitlab_version", "columns", "retry_cap", "repositories": [...], "cleanup_policies": [...]}
#   repositories: rows whose status is delete_scheduled, delete_ongoing or delete_failed.
#   cleanup_policies: rows whose cleanup-policy run is scheduled, unfinished or ongoing (they loop too).
Glcleanup.main do |params|
  columns = ContainerRepository.column_names

  # Filters combine as a union: rows of any named project, plus rows of any project under the group.
  project_ids = Array(params["projects"]).map do |path|
    project = Project.find_by_full_path(path)
    Glcleanup.refuse!("not_found", "project not found: #{path}") if project.nil?
    project.id
  end
  group_path = nil
  if params["group"]
    group = Group.find_by_full_path(params["group"])
    Glcleanup.refuse!("not_found", "group not found: #{params['group']}") if group.nil?
    group_path = group.full_path.downcase
  end
  everything = project_ids.empty? && group_path.nil?
  selected = lambda do |repo|
    everything || project_ids.include?(repo.project_id) ||
      (!group_path.nil? && repo.project.full_path.downcase.start_with?("#{group_path}/"))
  end
  scope = ContainerRepository.all

  describe = lambda do |repo|
    { "id" => repo.id, "project_id" => repo.project_id, "project" => repo.project.full_path,
      "path" => repo.path.to_s, "name" => repo.name }
      .merge(Glcleanup.deletion_state(repo))
      .merge("cleanup_policy_enabled" => repo.project.container_expiration_policy&.enabled ? true : false)
  end

  facts = Glcleanup.facts
  deleting = scope.where(status: Glcleanup.status_values(facts.fetch("deletion_states"))).order(:id).to_a
  cleaning = scope.where(expiration_policy_cleanup_status: Glcleanup.cleanup_values(
    facts.fetch("cleanup_looping_states")
  )).order(:id).to_a

  {
    "gitlab_version" => Gitlab::VERSION,
    "columns" => columns,
    "retry_cap" => Glcleanup.retry_cap,
    "repositories" => deleting.select(&selected).map(&describe),
    "cleanup_policies" => cleaning.select(&selected).map(&describe)
  }
end
