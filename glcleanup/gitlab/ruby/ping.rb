# ping.rb: proves the runner boots and reaches the database.
# Params: none. Result: {"gitlab_version", "columns", "retry_cap", "rails_env", "repositories"}
Glcleanup.main do |_params|
  Glcleanup.version_info.merge("rails_env" => Rails.env.to_s, "repositories" => ContainerRepository.count)
end
