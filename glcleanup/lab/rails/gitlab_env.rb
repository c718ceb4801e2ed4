# frozen_string_literal: true

# The lab's GitLab "environment": ActiveRecord 6.1 on the lab's SQLite database, with exactly the
# small, stable part of GitLab's model API that glcleanup's bundled scripts may use (design.md §9).
# Anything GitLab does not have is deliberately absent, so a script that works here works on GitLab.
# Version-dependent parts (17.5's retry columns and helpers) follow lab_settings.gitlab_version.

require "active_record"
require "active_support/all"
require "json"
require "logger"
require "fileutils"
require "uri"

module GitlabLab
  BOOT_WARNING = "WARNING: Active Record does not support composite primary key. " \
                 "(lab boot notice: printed before the script runs, like a real Rails boot)"

  def self.db_path
    path = ENV["GLCLEANUP_LAB_DB"].to_s
    abort("gitlab-rails (lab): GLCLEANUP_LAB_DB is not set") if path.empty?
    abort("gitlab-rails (lab): no database at #{path}") unless File.file?(path)
    path
  end

  def self.version_at_least?(major, minor)
    Gitlab.version_info >= Gitlab::VersionInfo.new(major, minor, 0)
  end

  # ContainerRepository#location's host part: the registry as users address it.
  def self.registry_host_port
    configured = setting("registry_host_port")
    return configured if configured.present?

    uri = URI.parse(setting("registry_api_url").to_s)
    uri.host ? "#{uri.host}:#{uri.port}" : "registry.example.com"
  end

  def self.setting(key)
    ActiveRecord::Base.connection.select_value(
      ActiveRecord::Base.sanitize_sql_array(["SELECT value FROM lab_settings WHERE key = ?", key])
    )
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
ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: GitlabLab.db_path, timeout: 30_000)
ActiveRecord::ConnectionAdapters::SQLite3Adapter.prepend(GitlabLab::ImmediateTransactions)
ActiveRecord::ConnectionAdapters::SQLite3Adapter.prepend(GitlabLab::MicrosecondDates)

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

  def location
    File.join(GitlabLab.registry_host_port, path)
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
