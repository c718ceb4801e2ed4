# frozen_string_literal: true

# The lab's GitLab "environment": ActiveRecord 6.1 on the lab's database (PostgreSQL as GitLab runs it, or
# SQLite for the embedded demo), with exactly the
# small, stable part of GitLab's model API that glcleanup's bundled scripts may use (design.md §9).
# Anything GitLab does not have is deliberately absent, so a script that works here works on GitLab.
# Version-dependent parts (17.5's retry columns and helpers) follow lab_settings.gitlab_version.

require "active_record"
require "active_support/all"
require "json"
require "logger"
require "fileutils"
require "uri"
require "openssl"

module GitlabLab
  BOOT_WARNING = "WARNING: Active Record does not support composite primary key. " \
                 "(lab boot notice: printed before the script runs, like a real Rails boot)"

  # GitLab releases from which `rails runner` runs on Rails >= 7.1, whose executor wraps the script and so
  # keeps the query cache on for all of it (rails/rails#44999): 18.0 shipped Rails 7.1.5.1, 17.11 was on
  # 7.0.8.7 (gitlab-org/gitlab!195620's version table). See glcleanup/lab/README.md for the sources.
  RAILS_71_FROM = [18, 0].freeze

  # GLCLEANUP_LAB_DB names the SQLite file; a database.url next to it (or GLCLEANUP_LAB_DATABASE_URL)
  # switches the lab to PostgreSQL, GitLab's database.
  def self.lab_dir
    path = ENV["GLCLEANUP_LAB_DB"].to_s
    abort("gitlab-rails (lab): GLCLEANUP_LAB_DB is not set") if path.empty?
    File.dirname(File.expand_path(path))
  end

  def self.database_url
    url = ENV["GLCLEANUP_LAB_DATABASE_URL"].to_s
    return url unless url.empty?

    file = File.join(lab_dir, "database.url")
    File.file?(file) ? File.read(file).strip : nil
  end

  def self.db_path
    path = ENV["GLCLEANUP_LAB_DB"].to_s
    abort("gitlab-rails (lab): no database at #{path}") unless database_url || File.file?(path)
    path
  end

  def self.postgres?
    !database_url.nil?
  end

  # postgresql:///NAME?host=SOCKET_DIR&user=USER as an ActiveRecord configuration hash.
  def self.postgres_config
    uri = URI.parse(database_url)
    query = URI.decode_www_form(uri.query.to_s).to_h
    { adapter: "postgresql", database: uri.path.delete_prefix("/"), host: query["host"] || uri.host,
      port: query["port"] || uri.port, username: query["user"] || uri.user }.compact
  end

  def self.query_cache_for_script?
    Gitlab.version_info >= Gitlab::VersionInfo.new(*RAILS_71_FROM, 0)
  end

  def self.flag?(key)
    setting(key) == "true"
  end

  def self.version_at_least?(major, minor)
    Gitlab.version_info >= Gitlab::VersionInfo.new(major, minor, 0)
  end

  # Lab configuration, always from the primary (exec_query does not go through select_all's routing).
  def self.setting(key)
    ActiveRecord::Base.connection.exec_query(
      ActiveRecord::Base.sanitize_sql_array(["SELECT value FROM lab_settings WHERE key = ?", key])
    ).rows.first&.first
  end

  def self.sessions
    @sessions ||= []
  end

  # What a Rails boot looks like from outside: noise on stdout, some time spent, one boot per process.
  def self.boot!
    $stdout.puts(BOOT_WARNING)
    $stdout.flush
    delay = ENV.fetch("GLCLEANUP_LAB_BOOT_DELAY", "0").to_f
    sleep(delay) if delay.positive?
    log = ENV["GLCLEANUP_LAB_BOOT_LOG"].to_s
    return if log.empty?

    File.open(log, "a") { |f| f.puts("#{Time.now.utc.iso8601(6)} pid=#{Process.pid} env=#{Rails.env}") }
  end

  # How `rails runner` runs the script: on Rails >= 7.1 inside `Rails.application.executor.wrap`, and
  # ActiveRecord's executor hooks turn the query cache on for the whole run (railties runner_command.rb,
  # activerecord query_cache.rb). Older Rails ran the script bare.
  def self.run_script(&block)
    return yield unless query_cache_for_script?

    ActiveRecord::Base.cache(&block)
  end

  # Minimal settings object with GitLab's Gitlab.config interface (GitlabSettings::Options): method and [] access.
  class Options
    def initialize(hash)
      @hash = hash.transform_keys(&:to_s)
    end

    def [](key)
      value = @hash[key.to_s]
      value.is_a?(Hash) ? Options.new(value) : value
    end

    def key?(key)
      @hash.key?(key.to_s)
    end

    def method_missing(name, *args)
      key = name.to_s
      return self[key] if args.empty? && @hash.key?(key)

      super
    end

    def respond_to_missing?(name, include_private = false)
      @hash.key?(name.to_s) || super
    end
  end

  # gitlab.yml's registry section as config/initializers/1_settings.rb completes it (host_port from
  # host and port; api_url; key: the JWT signing key file). "registry_disabled" leaves the defaults.
  def self.registry_config
    api = setting("registry_api_url").to_s
    uri = URI.parse(api)
    disabled = flag?("registry_disabled")
    host = setting("registry_host").presence || (disabled ? "example.com" : uri.host)
    port = setting("registry_port").presence || (disabled ? nil : uri.port)
    host_port = setting("registry_host_port").presence || [host, port].compact.join(":")
    { "enabled" => !disabled, "host" => host, "port" => port, "api_url" => api.presence || "http://localhost:5000/",
      "key" => setting("registry_key_path").presence, "issuer" => "omnibus-gitlab-issuer", "host_port" => host_port }
  end

  # A primary that stays current, and (with load balancing on) a "replica": a second connection that reads
  # the snapshot the lab exported earlier (pg_export_snapshot), i.e. a replica exactly that far behind.
  module LoadBalancedReads
    def select_all(*args, **kwargs)
      replica = GitlabLab.replica_connection
      if replica && !equal?(replica) && open_transactions.zero? && !GitlabLab.stuck_to_primary?
        return replica.select_all(*args, **kwargs)
      end

      super
    end
  end

  def self.replica_connection
    return @replica if defined?(@replica)

    @replica = nil
    snapshot = postgres? && flag?("load_balancing") ? setting("replica_snapshot").presence : nil
    return nil unless snapshot

    pool = ReplicaRecord.establish_connection(postgres_config)
    @replica = pool.connection
    @replica.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    @replica.execute(ActiveRecord::Base.sanitize_sql_array(["SET TRANSACTION SNAPSHOT ?", snapshot]))
    @replica
  end

  def self.stuck_to_primary?
    sessions.any?(&:use_primary?)
  end

  # Writes are serialized up front (BEGIN IMMEDIATE), the SQLite stand-in for PostgreSQL row locks:
  # a script's read-then-write cannot fail half-way because the worker committed in between.
  module ImmediateTransactions
    def begin_db_transaction
      log("begin immediate transaction", "TRANSACTION") { @connection.transaction(:immediate) }
    end
  end

  # Always microseconds ('YYYY-MM-DD HH:MM:SS.ffffff'), the format schema.py writes and parses.
  module MicrosecondDates
    def quoted_date(value)
      result = super
      value.acts_like?(:time) && !result.include?(".") ? "#{result}.000000" : result
    end
  end
end

ActiveRecord::Base.default_timezone = :utc
ActiveRecord::Base.time_zone_aware_attributes = true
ActiveRecord::Base.belongs_to_required_by_default = true
Time.zone_default = Time.find_zone!("UTC")
if GitlabLab.postgres?
  ActiveRecord::Base.establish_connection(GitlabLab.postgres_config)
else
  ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: GitlabLab.db_path, timeout: 30_000)
  ActiveRecord::ConnectionAdapters::SQLite3Adapter.prepend(GitlabLab::ImmediateTransactions)
  ActiveRecord::ConnectionAdapters::SQLite3Adapter.prepend(GitlabLab::MicrosecondDates)
end

module Rails
  def self.env
    @env ||= ActiveSupport::StringInquirer.new(ENV.fetch("RAILS_ENV", "production"))
  end

  # Like Rails, the logger writes to log/<env>.log (next to the lab database), never to stdout.
  def self.logger
    @logger ||= begin
      dir = File.join(File.dirname(File.expand_path(GitlabLab.db_path)), "log")
      FileUtils.mkdir_p(dir)
      ActiveSupport::Logger.new(File.join(dir, "#{env}.log"))
    end
  end
end

ActiveRecord::Base.logger = ENV["GLCLEANUP_LAB_SQL_LOG"] ? Logger.new($stderr) : nil

# The replica's connection class (lab plumbing, not a model).
module GitlabLab
  class ReplicaRecord < ActiveRecord::Base
    self.abstract_class = true
  end
end
if GitlabLab.postgres?
  require "active_record/connection_adapters/postgresql_adapter"
  ActiveRecord::ConnectionAdapters::PostgreSQLAdapter.prepend(GitlabLab::LoadBalancedReads)
end

module Gitlab
  # Gitlab::VersionInfo: comparable major/minor/patch (lib/gitlab/version_info.rb).
  class VersionInfo
    include Comparable

    attr_reader :major, :minor, :patch

    def self.parse(str)
      m = str.to_s.match(/(\d+)\.(\d+)\.(\d+)/)
      m ? new(m[1].to_i, m[2].to_i, m[3].to_i) : new
    end

    def initialize(major = 0, minor = 0, patch = 0)
      @major = major
      @minor = minor
      @patch = patch
    end

    def <=>(other)
      return unless other.is_a?(VersionInfo)
      return unless valid? && other.valid?

      [major, minor, patch] <=> [other.major, other.minor, other.patch]
    end

    def valid?
      major >= 0 && minor >= 0 && patch >= 0 && (major + minor + patch).positive?
    end

    def to_s
      valid? ? "#{major}.#{minor}.#{patch}" : "Unknown"
    end
  end

  VERSION = (GitlabLab.setting("gitlab_version") || "17.3.5").freeze

  def self.version_info
    @version_info ||= VersionInfo.parse(VERSION)
  end

  # Gitlab.config (Settings): only the registry section the scripts' paths touch.
  def self.config
    @config ||= GitlabLab::Options.new("registry" => GitlabLab.registry_config)
  end

  # lib/gitlab/database/load_balancing/{session,session_map}.rb: a session sticks to the primary once
  # use_primary! is called (or a write happened). Older releases reach it as Session.current, newer ones
  # as SessionMap.with_sessions(models) (which returns ScopedSessions).
  module Database
    module LoadBalancing
      def self.base_models
        [::ActiveRecord::Base].freeze
      end

      class Session
        def initialize
          @use_primary = false
          GitlabLab.sessions << self
        end

        def use_primary?
          @use_primary
        end

        def use_primary!
          @use_primary = true
        end

        unless GitlabLab.version_at_least?(17, 4)
          def self.current
            @current ||= new
          end
        end
      end

      if GitlabLab.version_at_least?(17, 4)
        class SessionMap
          def self.with_sessions(_models = LoadBalancing.base_models)
            ScopedSessions.new([@primary ||= Session.new])
          end
        end

        class ScopedSessions
          def initialize(sessions)
            @scoped_sessions = sessions
          end

          def use_primary!
            @scoped_sessions.each(&:use_primary!)
          end
        end
      end
    end
  end

  # ee/lib/gitlab/geo.rb exists on EE only; the lab has it where it simulates an EE instance with Geo.
  if GitlabLab.setting("geo_role").present?
    module Geo
      def self.enabled?
        true
      end

      def self.primary?
        GitlabLab.setting("geo_role") == "primary"
      end

      def self.secondary?
        GitlabLab.setting("geo_role") == "secondary"
      end
    end
  end
end

# lib/container_registry/registry.rb: what ContainerRepository#registry builds (the client is not modelled).
module ContainerRegistry
  class Registry
    attr_reader :uri, :path

    def initialize(uri, options = {})
      @uri = uri
      @options = options
      @path = options[:path] || default_path
    end

    private

    def default_path
      URI.parse(uri).host
    end
  end
end

# Flipper-style gates from feature_gates: a boolean gate, or an actor gate ("Project:<id>").
module Feature
  def self.enabled?(name, actor = nil, **_opts)
    gates = ActiveRecord::Base.connection.select_rows(
      ActiveRecord::Base.sanitize_sql_array(["SELECT key, value FROM feature_gates WHERE feature_key = ?",
                                             name.to_s])
    )
    return true if gates.any? { |key, value| key == "boolean" && value == "true" }
    return false if actor.nil?

    flipper_id = actor.respond_to?(:flipper_id) ? actor.flipper_id : "#{actor.class.name}:#{actor.id}"
    gates.any? { |key, value| key == "actors" && value == flipper_id }
  end

  def self.disabled?(name, actor = nil, **opts)
    !enabled?(name, actor, **opts)
  end
end

class ApplicationRecord < ActiveRecord::Base
  self.abstract_class = true
end

class Route < ApplicationRecord
  belongs_to :source, polymorphic: true
end

class Namespace < ApplicationRecord
  self.inheritance_column = :_type_disabled # 'Group'/'User' are plain data here
  belongs_to :parent, class_name: "Namespace", optional: true
  has_one :route, -> { where(source_type: "Namespace") }, foreign_key: :source_id
  has_many :projects

  def full_path
    route&.path
  end
end

# A group is a namespace of type 'Group' (app/models/group.rb < Namespace); find_by_full_path is Routable's.
class Group < ApplicationRecord
  self.table_name = "namespaces"
  self.inheritance_column = :_type_disabled
  default_scope { where(type: "Group") }
  has_one :route, -> { where(source_type: "Namespace") }, foreign_key: :source_id

  def self.find_by_full_path(path, follow_redirects: false)
    route = Route.where(source_type: "Namespace").find_by("LOWER(path) = LOWER(?)", path.to_s)
    route && find_by(id: route.source_id)
  end

  def full_path
    route&.path
  end
end

class Project < ApplicationRecord
  belongs_to :namespace
  has_one :route, -> { where(source_type: "Project") }, foreign_key: :source_id
  has_many :container_repositories
  has_one :container_expiration_policy

  # Case-insensitive, through the routes table (Routable.find_by_full_path).
  def self.find_by_full_path(path, follow_redirects: false)
    route = Route.where(source_type: "Project").find_by("LOWER(path) = LOWER(?)", path.to_s)
    route && find_by(id: route.source_id)
  end

  def full_path
    route&.path
  end

  def flipper_id
    "Project:#{id}"
  end
end

class ContainerExpirationPolicy < ApplicationRecord
  self.primary_key = :project_id
  belongs_to :project
end

class ContainerRepository < ApplicationRecord
  MAX_DELETION_FAILURES = 10 if GitlabLab.version_at_least?(17, 5)

  belongs_to :project

  enum status: { delete_scheduled: 0, delete_failed: 1, delete_ongoing: 2 }
  enum expiration_policy_cleanup_status: {
    cleanup_unscheduled: 0, cleanup_scheduled: 1, cleanup_unfinished: 2, cleanup_ongoing: 3
  }

  if GitlabLab.version_at_least?(17, 5)
    validates :failed_deletion_count, presence: true,
                                      numericality: { greater_than_or_equal_to: 0,
                                                      less_than_or_equal_to: MAX_DELETION_FAILURES }
  end

  # The repository path as the registry knows it: "<project full path>[/<name>]", downcased.
  def path
    @path ||= [project.full_path, name].select(&:present?).join("/").downcase
  end

  # app/models/container_repository.rb: location goes through #registry, which mints a full-access token.
  def registry
    @registry ||= begin
      token = Auth::ContainerRegistryAuthenticationService.full_access_token(path)
      url = Gitlab.config.registry.api_url
      host_port = Gitlab.config.registry.host_port
      ContainerRegistry::Registry.new(url, token: token, path: host_port)
    end
  end

  def location
    File.join(registry.path, path)
  end

  # EE: Geo::ReplicableModel publishes a deleted event on a primary, and every secondary removes its copy.
  after_destroy do
    if defined?(::Gitlab::Geo) && ::Gitlab::Geo.primary?
      self.class.connection.exec_insert(
        self.class.sanitize_sql_array(["INSERT INTO geo_events(replicable_name, event_name, payload, created_at) " \
                                       "VALUES ('container_repository', 'deleted', ?, ?)",
                                       JSON.generate("model_record_id" => id, "path" => path), Time.current])
      )
    end
  end

  def set_delete_ongoing_status
    now = Time.zone.now
    values = { status: :delete_ongoing, delete_started_at: now, status_updated_at: now }
    values[:next_delete_attempt_at] = nil if GitlabLab.version_at_least?(17, 5)
    update_columns(values)
  end

  # 17.5 (behind set_delete_failed_container_repository) and 17.6+: count the failure and back off
  # 2^count minutes; before that a plain reschedule.
  def set_delete_scheduled_status
    now = Time.zone.now
    values = { status: :delete_scheduled, delete_started_at: nil, status_updated_at: now }
    if GitlabLab.version_at_least?(17, 6) ||
       (GitlabLab.version_at_least?(17, 5) && Feature.enabled?(:set_delete_failed_container_repository, project))
      values[:failed_deletion_count] = failed_deletion_count + 1
      values[:next_delete_attempt_at] = now + (2**failed_deletion_count).minutes
    end
    update_columns(values)
  end

  if GitlabLab.version_at_least?(17, 5)
    def set_delete_failed_status
      update_columns(status: :delete_failed, delete_started_at: nil, status_updated_at: Time.zone.now)
    end
  end
end

# The registry side (client, tags, ThirdParty::DeleteTagsService), in its own file.
require File.join(__dir__, "container_registry")
