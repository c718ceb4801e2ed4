# glcleanup prelude: sent ahead of every bundled script on the runner's stdin.
#
# Input:  ARGV.last is the parameters: JSON, zlib-deflated, base64 (data, never code).
# Output: exactly one line "GLCLEANUP-RESULT:<json>" on stdout, after whatever Rails printed
#         while booting. {"ok":true,"result":...} or {"ok":false,"error":{"kind","class","message"}}.
require "json"
require "base64"
require "zlib"

module Glcleanup
  MARKER = "GLCLEANUP-RESULT:"
  EVENT = "GLCLEANUP-EVENT:"

  # A failure the script means to report (not found, refused), as opposed to a crash.
  class Refusal < StandardError
    attr_reader :kind

    def initialize(kind, message)
      @kind = kind
      super(message)
    end
  end

  def self.params
    @params ||= begin
      raw = ARGV.last
      raw.nil? || raw.empty? ? {} : JSON.parse(Zlib::Inflate.inflate(Base64.strict_decode64(raw)))
    end
  end

  def self.emit(document)
    $stdout.flush
    $stdout.write("\n#{MARKER}#{JSON.generate(document)}\n")
    $stdout.flush
  end

  # A progress document glcleanup acts on at once (e.g. writes the journal before any change).
  # Raises if stdout is gone (connection cut), so nothing is changed without the caller hearing.
  def self.event(document)
    $stdout.write("\n#{EVENT}#{JSON.generate(document)}\n")
    $stdout.flush
  end

  # "Class: first line of the message": PostgreSQL errors carry CONTEXT/DETAIL lines after the first.
  def self.one_line(error)
    first = error.message.to_s.lines.map(&:strip).reject(&:empty?).first
    "#{error.class}: #{first}"
  end

  # An event after the commit, when nobody may be listening any more (a cut connection closes our stdout):
  # false instead of an exception, so the script keeps verifying, which protects the change.
  def self.tell(document)
    event(document)
    true
  rescue SystemCallError, IOError
    false
  end

  def self.refuse!(kind, message)
    raise Refusal.new(kind, message)
  end

  # Runs the script body with the parameters; any exception becomes an error document and exit 1.
  # The body runs uncached (on Rails >= 7.1 `rails runner` keeps the query cache on for the whole script,
  # so a repeated SELECT would return its first answer) and stuck to the primary (with database load
  # balancing a read outside a transaction may go to a replica that is seconds behind).
  def self.main
    result = ActiveRecord::Base.uncached do
      stick_to_primary!
      yield(params)
    end
    emit({ "ok" => true, "result" => result })
  rescue Refusal => e
    emit({ "ok" => false, "error" => { "kind" => e.kind, "class" => e.class.name, "message" => e.message } })
    exit 1
  rescue StandardError, ScriptError => e
    emit({ "ok" => false, "error" => { "kind" => "exception", "class" => e.class.name, "message" => e.message,
                                       "backtrace" => Array(e.backtrace).first(8) } })
    exit 1
  end

  # GitLab's own way to keep a session's reads on the primary: SessionMap.with_sessions(models).use_primary!
  # on newer releases, Session.current.use_primary! on older ones (lib/gitlab/database/load_balancing/).
  def self.stick_to_primary!
    return "none" unless defined?(::Gitlab::Database::LoadBalancing)

    balancing = ::Gitlab::Database::LoadBalancing
    if defined?(balancing::SessionMap) && balancing::SessionMap.respond_to?(:with_sessions)
      balancing::SessionMap.with_sessions.use_primary!
      "session_map"
    elsif defined?(balancing::Session) && balancing::Session.respond_to?(:current)
      balancing::Session.current.use_primary!
      "session"
    else
      "none"
    end
  end

  # The project named in params["project"] and its repositories by id, narrowed to params["repositories"];
  # an id of another project is the admin's input error (exit 2), nothing touched.
  def self.project_repositories(params)
    path = params["project"].to_s
    project = Project.find_by_full_path(path)
    refuse!("not_found", "project not found: #{path}") if project.nil?
    repos = project.container_repositories.to_a.sort_by(&:id)
    wanted = Array(params["repositories"]).map(&:to_i)
    return [project, repos] if wanted.empty?

    foreign = wanted - repos.map(&:id)
    unless foreign.empty?
      refuse!("input", "container repository #{foreign.join(', ')} does not belong to project " \
                       "#{project.full_path}; nothing was changed")
    end
    [project, repos.select { |r| wanted.include?(r.id) }]
  end

  # Integers from the model's enum, never names mixed with integers; an unknown name is refused.
  def self.enum_values(mapping, names)
    Array(names).map do |name|
      mapping.fetch(name.to_s) { refuse!("refused", "unknown state #{name.to_s[0, 40].inspect}") }
    end
  end

  def self.status_values(*names)
    enum_values(ContainerRepository.statuses, names.flatten)
  end

  def self.cleanup_values(*names)
    enum_values(ContainerRepository.expiration_policy_cleanup_statuses, names.flatten)
  end

  # Where users pull the repository from, without ContainerRepository#location: that goes through
  # #registry, which mints a full-access token from the registry's signing key (absent on many hosts,
  # or with the registry disabled). nil when the registry settings have no host_port.
  def self.location(repo)
    host_port = begin
      Gitlab.config.registry.host_port
    rescue StandardError
      nil
    end
    host_port.to_s.empty? ? nil : File.join(host_port.to_s, repo.path.to_s)
  end

  # EE's Gitlab::Geo.primary? (ee/lib/gitlab/geo.rb); CE has no Gitlab::Geo.
  def self.geo_primary?
    return false unless defined?(::Gitlab::Geo) && ::Gitlab::Geo.respond_to?(:primary?)

    ::Gitlab::Geo.primary? ? true : false
  end

  # Values as the database holds them (timestamps at full precision), for journals and reports.
  def self.raw_row(record)
    record.attributes_before_type_cast.transform_values { |v| v.respond_to?(:iso8601) ? v.iso8601(6) : v }
  end

  def self.time(value)
    value&.utc&.iso8601(6)
  end

  def self.retry_columns?
    columns = ContainerRepository.column_names
    columns.include?("failed_deletion_count") && columns.include?("next_delete_attempt_at")
  end

  # Where a repository's deletion stands; 17.5's retry columns only where the table has them.
  def self.deletion_state(repo)
    row = { "status" => repo.status, "status_updated_at" => time(repo.status_updated_at),
            "delete_started_at" => time(repo.delete_started_at),
            "expiration_policy_cleanup_status" => repo.expiration_policy_cleanup_status }
    if retry_columns?
      row["failed_deletion_count"] = repo.failed_deletion_count
      row["next_delete_attempt_at"] = time(repo.next_delete_attempt_at)
    end
    row
  end

  def self.version_info
    { "gitlab_version" => Gitlab::VERSION, "columns" => ContainerRepository.column_names, "retry_cap" => retry_cap }
  end

  # GitLab's behaviour per version, as glcleanup/gitlab_facts.py states it (sent with the parameters).
  def self.facts
    params.fetch("facts")
  end

  # The retry cap in effect, in gitlab_facts.RetryCap's words: native, feature_flag or none.
  def self.retry_cap
    rule = facts.fetch("retry_cap")
    info = Gitlab.version_info
    current = [info.major, info.minor]
    return "native" if (current <=> rule.fetch("native_from")) >= 0
    return "none" if (current <=> rule.fetch("flag_from")).negative?

    Feature.enabled?(rule.fetch("flag").to_sym) ? "feature_flag" : "none"
  end
end
